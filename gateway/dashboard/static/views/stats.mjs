// The app's counts, charts of the last hour, and its settings (secret masked, with reveal).
import * as api from "../api.mjs";
import { lineChart } from "../chart.mjs";
import { clear, h, toast } from "../dom.mjs";

export function statsView(appId) {
  const charts = h("div", { class: "charts", id: "charts" });
  const settings = h("div", { class: "card", id: "settings" });
  async function refreshCharts() {
    const { minutes } = await api.get(api.appPath(appId, "/chart"));
    clear(charts,
      lineChart("Connections", minutes.map((m) => ({ value: m.connections }))),
      lineChart("Events accepted per second", minutes.map((m) => ({ value: m.events / 60 })), "/s"),
      lineChart("Messages delivered per second", minutes.map((m) => ({ value: m.delivered / 60 })), "/s"));
  }
  async function loadSettings() {
    const app = await api.get(api.appPath(appId));
    const secret = h("code", { id: "secret" }, app.secret_masked);
    clear(settings, h("h2", {}, "Settings"),
      h("dl", { class: "figures" },
        h("div", {}, h("dt", {}, "Key"), h("dd", { class: "mono" }, app.key)),
        h("div", {}, h("dt", {}, "Secret"), h("dd", {}, secret, " ", h("button", {
          id: "reveal", class: "link",
          onclick: async () => {
            try { secret.textContent = (await api.post(api.appPath(appId, "/secret"))).secret; } catch (e) { toast(e.message, "error"); }
          },
        }, "Reveal"))),
        ["connections", "channels", "presence_members", "events_per_second", "delivered_per_second",
          "webhook_backlog", "push_in_flight"]
          .map((k) => h("div", {}, h("dt", {}, k.replaceAll("_", " ")), h("dd", { "data-figure": k }, app[k])))),
      h("h3", {}, "Configuration"), h("pre", {}, JSON.stringify(app.config, null, 2)),
      h("h3", {}, "Webhooks"), h("ul", {}, app.webhooks.map((w) => h("li", {}, h("code", {}, w.url), " ", w.events.join(", ")))));
  }
  refreshCharts();
  loadSettings();
  const timer = setInterval(() => refreshCharts().catch(() => {}), 10000);
  return { el: h("div", {}, charts, settings), stop: () => clearInterval(timer) };
}
