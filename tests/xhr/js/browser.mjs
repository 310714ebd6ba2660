// Debian's headless Chromium driven by playwright-core for tests/xhr/test_xhr_browser.py:
// commands on stdin, one JSON line per answer. env: NODE_MODULES, CHROMIUM.
import { createRequire } from "node:module";
import { join } from "node:path";
import readline from "node:readline";

const require = createRequire(join(process.env.NODE_MODULES, "..", "browser.cjs"));
const { chromium } = require("playwright-core");
const out = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM,
  headless: true,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const page = await browser.newPage();
const logs = [];
const requests = [];
page.on("console", (message) => logs.push(`${message.type()}: ${message.text()}`));
page.on("pageerror", (error) => logs.push(`pageerror: ${error.message}`));
page.on("request", (request) => requests.push(`${request.method()} ${new URL(request.url()).pathname}`));

const ops = {
  open: async ({ url }) => { await page.goto(url); },
  look: async () => page.evaluate(() => ({
    items: [...document.querySelectorAll("#events li")].map((li) => Number(li.textContent)),
    state: document.getElementById("state").textContent,
    transport: document.getElementById("transport").textContent,
    subscribed: Number(document.getElementById("subscribed").textContent),
    websocket: typeof window.WebSocket,
  })),
  requests: async () => ({ lines: requests }),
  console: async () => ({ lines: logs }),
  quit: async () => { await browser.close(); process.exit(0); },
};

readline.createInterface({ input: process.stdin }).on("line", async (line) => {
  const { op, ...args } = JSON.parse(line);
  try {
    out({ kind: op, ...(await ops[op](args)) });
  } catch (error) {
    out({ kind: "error", op, error: String(error) });
  }
});
out({ kind: "ready", version: browser.version() });
