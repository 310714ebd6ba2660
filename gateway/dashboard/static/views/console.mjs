// The debug console: the app's live log (polled every second, which also keeps the app
// watched so nodes and workers write it), newest first, filterable; and the event creator.
import * as api from "../api.mjs";
import { clear, h, time, toast } from "../dom.mjs";

const KEEP = 500;
const KINDS = ["connected", "disconnected", "subscribed", "unsubscribed", "subscription_error",
  "member_added", "member_removed", "client_event", "api_event", "webhook", "push_publish"];

function summary(e) {
  switch (e.kind) {
    case "api_event": return `${e.event} → ${e.channel} (${e.bytes} B, serial ${e.serial}${e.via !== "rest" ? `, via ${e.via}` : ""}) ${e.data}`;
    case "client_event": return `${e.event} → ${e.channel} from ${e.socket_id}${e.user_id ? ` (user ${e.user_id})` : ""} ${JSON.stringify(e.data)}`;
    case "connected": return `socket ${e.socket_id}`;
    case "disconnected": return `socket ${e.socket_id}${e.channels?.length ? ` (was in ${e.channels.join(", ")})` : ""}`;
    case "subscribed": case "unsubscribed": return `${e.channel} by ${e.socket_id}${e.user_id ? ` (user ${e.user_id})` : ""}`;
    case "subscription_error": return `${e.channel} by ${e.socket_id}: ${e.error}`;
    case "member_added": case "member_removed": return `user ${e.user_id} on ${e.channel}`;
    case "webhook": return `${e.outcome} ${e.url} attempt ${e.attempt}${e.http_status ? `, HTTP ${e.http_status}` : ""}${e.error ? `, ${e.error}` : ""}`;
    case "push_publish": return `${e.publishId} ${e.status} (${e.run}): ${e.delivered ?? 0} delivered, ${e.failed ?? 0} failed of ${e.devices ?? 0}`;
    default: return JSON.stringify(e);
  }
}

function creator(appId) {
  const channel = h("input", { id: "ev-channel", placeholder: "my-channel", required: true });
  const name = h("input", { id: "ev-name", value: "test-event", required: true });
  const data = h("textarea", { id: "ev-data", rows: 3 }, '{"message": "hello world"}');
  return h("form", {
    id: "creator", class: "card",
    onsubmit: async (event) => {
      event.preventDefault();
      try {
        await api.post(api.appPath(appId, "/events"), { channel: channel.value, name: name.value, data: data.value });
        toast(`Sent ${name.value} to ${channel.value}`);
      } catch (e) {
        toast(`Not sent: ${e.message}`, "error");
      }
    },
  }, h("h2", {}, "Event creator"),
  h("label", {}, "Channel", channel), h("label", {}, "Event", name), h("label", {}, "Data", data),
  h("button", { type: "submit", id: "ev-send" }, "Send event"));
}

export function consoleView(appId) {
  let entries = [];
  let last = null;
  const body = h("tbody");
  const filter = h("input", { id: "log-filter", type: "search", placeholder: "Filter: channel, event, socket id…", oninput: draw });
  const kind = h("select", { id: "log-kind", onchange: draw }, h("option", { value: "" }, "All kinds"),
    KINDS.map((k) => h("option", { value: k }, k)));
  const state = h("span", { id: "log-state", class: "muted" }, "connecting…");
  function draw() {
    const text = filter.value.toLowerCase();
    const shown = entries.filter((e) => (!kind.value || e.kind === kind.value)
      && (!text || JSON.stringify(e).toLowerCase().includes(text)));
    clear(body, shown.map((e) => h("tr", { "data-kind": e.kind, class: `kind-${e.kind}` },
      h("td", { class: "mono" }, time(e.at_ms)), h("td", {}, h("span", { class: "badge" }, e.kind)),
      h("td", { class: "mono muted" }, e.source), h("td", { class: "summary" }, summary(e)))));
  }
  async function poll() {
    const query = last ? `?after=${encodeURIComponent(last)}` : "";
    const { entries: fresh } = await api.get(api.appPath(appId, `/log${query}`));
    if (fresh.length) {
      last = fresh[0].id;
      entries = [...fresh, ...entries].slice(0, KEEP);
      draw();
    }
    state.textContent = `live · ${entries.length} entries`;
  }
  let stopped = false;
  async function loop() {
    while (!stopped) {
      try { await poll(); } catch (e) { state.textContent = `not updating: ${e.message}`; }
      await new Promise((r) => setTimeout(r, 1000));
    }
  }
  loop();
  const el = h("div", { class: "split" },
    h("div", { class: "card grow" },
      h("div", { class: "toolbar" }, filter, kind, state),
      h("table", { id: "log" }, h("thead", {}, h("tr", {}, h("th", {}, "Time"), h("th", {}, "Kind"),
        h("th", {}, "Source"), h("th", {}, "Details"))), body)),
    creator(appId));
  return { el, stop: () => { stopped = true; } };
}
