// Occupied channels, and one channel: subscribers, presence members, cache, recent history.
import * as api from "../api.mjs";
import { clear, h } from "../dom.mjs";

function channelList(appId) {
  const body = h("tbody");
  async function refresh() {
    const { channels } = await api.get(api.appPath(appId, "/channels"));
    clear(body, channels.length ? channels.map((c) => h("tr", { "data-channel": c.name },
      h("td", {}, h("a", { href: `#/apps/${encodeURIComponent(appId)}/channels/${encodeURIComponent(c.name)}` }, c.name)),
      h("td", { class: "num" }, c.subscriptions)))
      : h("tr", {}, h("td", { colspan: 2, class: "muted" }, "No occupied channel.")));
  }
  refresh();
  const timer = setInterval(() => refresh().catch(() => {}), 2000);
  const lookup = h("input", { id: "channel-lookup", placeholder: "any channel name" });
  const el = h("div", { class: "card" },
    h("form", { class: "toolbar", onsubmit: (e) => {
      e.preventDefault();
      location.hash = `#/apps/${encodeURIComponent(appId)}/channels/${encodeURIComponent(lookup.value)}`;
    } }, lookup, h("button", { type: "submit" }, "Look up")),
    h("table", { id: "channels" }, h("thead", {}, h("tr", {}, h("th", {}, "Channel"), h("th", { class: "num" }, "Subscriptions"))), body));
  return { el, stop: () => clearInterval(timer) };
}

function channelDetail(appId, name) {
  const box = h("div", { class: "card", id: "channel" }, h("p", { class: "muted" }, "Loading…"));
  async function refresh() {
    const c = await api.get(api.appPath(appId, `/channels/${encodeURIComponent(name)}`));
    clear(box,
      h("h2", {}, c.name, " ", h("span", { class: "badge" }, c.kind)),
      h("p", {}, "Subscriptions: ", h("strong", { id: "channel-subs" }, c.subscriptions)),
      c.members === null ? null : [h("h3", {}, `Presence members (${c.members.length})`),
        h("ul", { id: "members" }, c.members.map((m) => h("li", {}, h("strong", {}, m.id), " ", h("code", {}, m.info))))],
      c.cache === null ? null : [h("h3", {}, "Cache"), h("pre", {}, JSON.stringify(c.cache, null, 2))],
      h("h3", {}, "Recent history"),
      h("table", { id: "history" }, h("thead", {}, h("tr", {}, h("th", {}, "Serial"), h("th", {}, "Event"), h("th", {}, "Data"))),
        h("tbody", {}, c.history.map((e) => h("tr", {}, h("td", { class: "mono" }, e.serial), h("td", {}, e.event),
          h("td", { class: "mono" }, typeof e.data === "string" ? e.data : JSON.stringify(e.data)))))));
  }
  refresh().catch((e) => clear(box, h("p", { class: "error" }, e.message)));
  const timer = setInterval(() => refresh().catch(() => {}), 3000);
  return { el: box, stop: () => clearInterval(timer) };
}

export function channelsView(appId, rest) {
  return rest ? channelDetail(appId, rest) : channelList(appId);
}
