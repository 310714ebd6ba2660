// A line chart in SVG: one series of numbers over the last hour, with its min/max labelled.
import { h } from "./dom.mjs";

const NS = "http://www.w3.org/2000/svg";
const W = 480, H = 120, PAD = 24;

function svg(tag, attrs = {}) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  return el;
}

export function lineChart(title, points, unit = "") {
  const values = points.map((p) => p.value);
  const max = Math.max(1, ...values);
  const step = points.length > 1 ? (W - 2 * PAD) / (points.length - 1) : 0;
  const y = (v) => H - PAD - (v / max) * (H - 2 * PAD);
  const path = points.map((p, i) => `${i ? "L" : "M"}${(PAD + i * step).toFixed(1)},${y(p.value).toFixed(1)}`).join(" ");
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img", "aria-label": title });
  root.append(svg("line", { x1: PAD, y1: H - PAD, x2: W - PAD, y2: H - PAD, class: "axis" }));
  root.append(svg("line", { x1: PAD, y1: PAD, x2: W - PAD, y2: PAD, class: "grid" }));
  const top = svg("text", { x: 2, y: PAD + 4, class: "label" });
  top.textContent = `${+max.toFixed(2)}`;
  const zero = svg("text", { x: 2, y: H - PAD + 4, class: "label" });
  zero.textContent = "0";
  const left = svg("text", { x: PAD, y: H - 6, class: "label" });
  left.textContent = "−60 min";
  const right = svg("text", { x: W - PAD, y: H - 6, class: "label", "text-anchor": "end" });
  right.textContent = "now";
  root.append(top, zero, left, right, svg("path", { d: path, class: "line" }));
  const last = values.length ? values[values.length - 1] : 0;
  return h("figure", { class: "chart-box" },
    h("figcaption", {}, title, h("strong", {}, ` ${+last.toFixed(2)}${unit}`)), root);
}
