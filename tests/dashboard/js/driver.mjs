// Headless Chromium (Debian's) driven by playwright-core for tests/dashboard: generic page
// commands on stdin, one JSON line per answer. env: NODE_MODULES (playwright-core), CHROMIUM.
import { createRequire } from "node:module";
import { join } from "node:path";
import readline from "node:readline";

const require = createRequire(join(process.env.NODE_MODULES, "..", "driver.cjs"));
const { chromium } = require("playwright-core");
const out = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM,
  headless: true,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
const page = await context.newPage();
const logs = [];
page.on("console", (message) => logs.push(`${message.type()}: ${message.text()}`));
page.on("pageerror", (error) => logs.push(`pageerror: ${error.message}`));

const ops = {
  open: async ({ url }) => { await page.goto(url); },
  fill: async ({ selector, value }) => { await page.fill(selector, value); },
  click: async ({ selector }) => { await page.click(selector); },
  // The text of every element matching the selector, as a person would read it.
  texts: async ({ selector }) => ({
    texts: await page.$$eval(selector, (els) => els.map((el) => el.textContent)),
  }),
  visible: async ({ selector }) => ({ visible: await page.isVisible(selector) }),
  // A script run in the page (e.g. a request another site could make with the cookie).
  evaluate: async ({ script }) => ({ value: await page.evaluate(script) }),
  cookies: async () => ({ cookies: await context.cookies() }),
  screenshot: async ({ path }) => { await page.screenshot({ path, fullPage: true }); },
  console: async () => ({ lines: logs }),
  quit: async () => {
    await browser.close();
    process.exit(0);
  },
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
