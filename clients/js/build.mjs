// Writes the CommonJS entry point (index.cjs) and its types (index.d.cts) from the ES module
// (index.mjs, index.d.ts), the only sources. `node build.mjs --check` fails when they are
// out of date (the tests run it).
import { readFileSync, writeFileSync } from "node:fs";

const here = (name) => new URL(name, import.meta.url);
const source = readFileSync(here("index.mjs"), "utf8");
const exported = [...source.matchAll(/^export function (\w+)/gm)].map((m) => m[1]);
const header = "// Generated from index.mjs by build.mjs: edit index.mjs, then run `npm run build`.\n";
const outputs = {
  "index.cjs": `${header}"use strict";\n\n${source.replace(/^export function/gm, "function")}` +
    `\nmodule.exports = { ${exported.join(", ")} };\n`,
  "index.d.cts": readFileSync(here("index.d.ts"), "utf8"),
};

const stale = [];
for (const [name, text] of Object.entries(outputs)) {
  let current = null;
  try {
    current = readFileSync(here(name), "utf8");
  } catch {}
  if (current === text) continue;
  if (process.argv.includes("--check")) stale.push(name);
  else writeFileSync(here(name), text);
}
if (stale.length) {
  console.error(`out of date: ${stale.join(", ")} (run npm run build)`);
  process.exit(1);
}
