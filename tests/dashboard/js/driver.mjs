// Generic page commands for tests/dashboard in headless Chromium (tests/_harness/js/chromium.mjs).
import { serve } from "../../_harness/js/chromium.mjs";

await serve(({ page, context }) => ({
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
}));
