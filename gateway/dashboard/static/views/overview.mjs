// Every app with its live counts, refreshed every 2 s.
import * as api from "../api.mjs";
import { clear, h } from "../dom.mjs";

const COLUMNS = [
  ["connections", "Connections"], ["channels", "Channels"], ["presence_members", "Presence members"],
  ["events_per_second", "Events/s"], ["delivered_per_second", "Delivered/s"],
  ["webhook_backlog", "Webhook backlog"],
  ["webhooks_dead", "Dead webhooks"], ["push_in_flight", "Pushes in flight"],
];

export function overviewView() {
  const body = h("tbody");
  const el = h("section", {},
    h("h1", {}, "Apps"),
    h("table", { id: "apps" },
      h("thead", {}, h("tr", {}, h("th", {}, "App"), h("th", {}, "Key"),
        COLUMNS.map(([, title]) => h("th", { class: "num" }, title)))),
      body));
  async function refresh() {
    const { apps } = await api.get("/apps");
    clear(body, apps.map((a) => h("tr", { "data-app": a.id, class: a.enabled ? "" : "disabled" },
      h("td", {}, h("a", { href: `#/apps/${encodeURIComponent(a.id)}/console` }, a.id)),
      h("td", { class: "mono" }, a.key),
      COLUMNS.map(([name]) => h("td", { class: "num", "data-col": name }, a[name])))));
  }
  refresh();
  const timer = setInterval(() => refresh().catch(() => {}), 2000);
  return { el, stop: () => clearInterval(timer) };
}
