// Beams publishes of the app: the latest ones with their per-device outcomes, and totals.
import * as api from "../api.mjs";
import { clear, dateTime, h } from "../dom.mjs";

// "fcm: 3 delivered, 1 failed · apns: 2 delivered": each platform's outcomes in this publish.
function platformsText(platforms) {
  return Object.entries(platforms).sort().map(([platform, outcomes]) =>
    `${platform}: ${Object.entries(outcomes).sort().map(([k, n]) => `${n} ${k}`).join(", ")}`).join(" · ");
}

export function pushView(appId) {
  const totals = h("dl", { id: "push-totals", class: "figures" });
  const body = h("tbody");
  async function refresh() {
    const data = await api.get(api.appPath(appId, "/push"));
    clear(totals, Object.entries(data.totals).sort().map(([k, v]) => h("div", {}, h("dt", {}, k), h("dd", {}, v))));
    clear(body, data.publishes.length ? data.publishes.map((p) => h("tr", { "data-publish": p.publishId },
      h("td", { class: "mono" }, p.publishId), h("td", {}, dateTime(p.createdAt * 1000)),
      h("td", {}, h("span", { class: `badge ${p.status}` }, p.status)),
      ["devices", "delivered", "failed", "retried", "removed", "unknown", "pending"].map((k) => h("td", { class: "num" }, p[k])),
      h("td", { class: "platforms" }, platformsText(p.platforms || {})),
      h("td", {}, Object.entries(p.errors).map(([platform, error]) => `${platform}: ${error}`).join("; "))))
      : h("tr", {}, h("td", { colspan: 12, class: "muted" }, "No publish yet.")));
  }
  refresh();
  const timer = setInterval(() => refresh().catch(() => {}), 2000);
  return {
    el: h("div", {}, h("div", { class: "card" }, h("h2", {}, "Totals"), totals),
      h("div", { class: "card" }, h("h2", {}, "Latest publishes"), h("table", { id: "publishes" },
        h("thead", {}, h("tr", {}, ["Publish", "Created", "Status", "Devices", "Delivered", "Failed", "Retried",
          "Removed", "Unknown", "Pending", "Per platform", "Errors"].map((t) => h("th", {}, t)))), body))),
    stop: () => clearInterval(timer),
  };
}
