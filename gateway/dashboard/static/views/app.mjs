// One app: a tab bar over its console, channels, webhooks, push and stats.
import { h } from "../dom.mjs";
import { consoleView } from "./console.mjs";
import { channelsView } from "./channels.mjs";
import { webhooksView } from "./webhooks.mjs";
import { pushView } from "./push.mjs";
import { statsView } from "./stats.mjs";

const TABS = [
  ["console", "Debug console", consoleView], ["channels", "Channels", channelsView],
  ["webhooks", "Webhooks", webhooksView], ["push", "Push", pushView], ["stats", "Stats & settings", statsView],
];

export function appView(appId, tab, rest) {
  const [, , make] = TABS.find(([name]) => name === tab) || TABS[0];
  const inner = make(appId, rest);
  const el = h("section", {},
    h("h1", {}, h("a", { href: "#/" }, "Apps"), " / ", h("span", { id: "app-id" }, appId)),
    h("nav", { class: "tabs" }, TABS.map(([name, title]) => h("a", {
      href: `#/apps/${encodeURIComponent(appId)}/${name}`, class: name === tab ? "active" : "",
      id: `tab-${name}`,
    }, title))),
    inner.el);
  return { el, stop: inner.stop };
}
