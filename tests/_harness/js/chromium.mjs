// Headless Chromium (Debian's package) driven by playwright-core, for the browser tests'
// own scripts (tests/*/js/*.mjs): each passes the commands its test needs; this module launches
// the browser, keeps the page's console, and answers one JSON line per command read on stdin.
// env: NODE_MODULES (with playwright-core), CHROMIUM (the browser's executable).
import { createRequire } from "node:module";
import { join } from "node:path";
import readline from "node:readline";

const require = createRequire(join(process.env.NODE_MODULES, "..", "chromium.cjs"));
const { chromium } = require("playwright-core");
const out = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");

// ops({ page, context }) gives the script's own commands, beside open, screenshot, console, quit.
export async function serve(ops, viewport = { width: 1280, height: 800 }) {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM,
    headless: true,
    // No sandbox (root in CI); nothing that reaches outside the machine.
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  const logs = [];
  page.on("console", (message) => logs.push(`${message.type()}: ${message.text()}`));
  page.on("pageerror", (error) => logs.push(`pageerror: ${error.message}`));
  const commands = {
    open: async ({ url }) => { await page.goto(url); },
    screenshot: async ({ path }) => { await page.screenshot({ path, fullPage: true }); },
    console: async () => ({ lines: logs }),
    quit: async () => { await browser.close(); process.exit(0); },
    ...ops({ page, context }),
  };
  readline.createInterface({ input: process.stdin }).on("line", async (line) => {
    const { op, ...args } = JSON.parse(line);
    try {
      out({ kind: op, ...(await commands[op](args)) });
    } catch (error) {
      out({ kind: "error", op, error: String(error) });
    }
  });
  out({ kind: "ready", version: browser.version() });
}
