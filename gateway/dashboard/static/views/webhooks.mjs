// Webhook deliveries by status, each with its attempts, and a replay button.
import * as api from "../api.mjs";
import { clear, dateTime, h, toast } from "../dom.mjs";

const STATUSES = ["pending", "failed", "dead", "delivered"];

export function webhooksView(appId) {
  let status = "failed";
  const counts = h("nav", { class: "tabs small", id: "wh-status" });
  const list = h("div", { id: "deliveries" });
  const endpoints = h("ul", { id: "endpoints" });

  function attempts(d) {
    return h("table", { class: "attempts" },
      h("thead", {}, h("tr", {}, ["#", "At", "Status", "Latency", "Error"].map((t) => h("th", {}, t)))),
      h("tbody", {}, d.attempts.map((a) => h("tr", { class: "attempt" },
        h("td", {}, a.n, a.manual ? " (replay)" : ""), h("td", {}, dateTime(a.at_ms)),
        h("td", { class: "mono" }, a.status ?? "—"), h("td", {}, `${a.latency_ms ?? "—"} ms`),
        h("td", {}, a.error || a.detail || "")))));
  }

  async function replay(id) {
    try {
      const r = await api.post(api.appPath(appId, `/webhooks/${encodeURIComponent(id)}/replay`));
      toast(`Delivery ${id}: ${r.result}`);
      refresh();
    } catch (e) {
      toast(`Replay refused: ${e.message}`, "error");
    }
  }

  async function replayAll() {
    try {
      const r = await api.post(api.appPath(appId, "/webhooks/replay"), { status });
      toast(`Replayed ${r.replayed} ${status} deliveries`);
      refresh();
    } catch (e) {
      toast(`Replay refused: ${e.message}`, "error");
    }
  }

  async function refresh() {
    const data = await api.get(api.appPath(appId, `/webhooks?status=${status}`));
    clear(counts, STATUSES.map((s) => h("button", {
      type: "button", class: s === status ? "active" : "", "data-status": s,
      onclick: () => { status = s; refresh(); },
    }, `${s} (${data.counts[s]})`)),
    (status === "dead" || status === "failed") && data.counts[status]
      ? h("button", { type: "button", id: "replay-all", class: "replay-all", onclick: replayAll }, `Replay all ${status}`)
      : null);
    clear(endpoints, data.endpoints.map((e) => h("li", {}, h("code", {}, e.url), " ",
      e.disabled ? h("span", { class: "badge bad" }, "disabled") : h("span", { class: "badge" }, "enabled"))));
    const details = await Promise.all(data.deliveries.map((d) =>
      api.get(api.appPath(appId, `/webhooks/${encodeURIComponent(d.id)}`))));
    clear(list, details.length ? details.map((d) => h("div", { class: "delivery card", "data-id": d.id, "data-status": d.status },
      h("div", { class: "toolbar" },
        h("strong", {}, d.id), h("span", { class: `badge ${d.status}` }, d.status),
        h("span", { class: "muted" }, `${d.url} · ${d.events} event(s) · created ${dateTime(d.created_ms)}`),
        d.next_attempt_ms ? h("span", { class: "muted" }, `next attempt ${dateTime(d.next_attempt_ms)}`) : null,
        d.status === "pending" ? null : h("button", { class: "replay", onclick: () => replay(d.id) }, "Replay")),
      d.reason ? h("p", { class: "muted" }, d.reason) : null,
      attempts(d)))
      : h("p", { class: "muted" }, `No ${status} delivery.`));
  }
  refresh().catch((e) => clear(list, h("p", { class: "error" }, e.message)));
  const timer = setInterval(() => refresh().catch(() => {}), 2000);
  return {
    el: h("div", {}, h("div", { class: "card" }, h("h2", {}, "Endpoints"), endpoints), counts, list),
    stop: () => clearInterval(timer),
  };
}
