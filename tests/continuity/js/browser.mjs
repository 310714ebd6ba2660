// The page of tests/continuity/test_continuity_browser.py in headless Chromium
// (tests/_harness/js/chromium.mjs).
import { serve } from "../../_harness/js/chromium.mjs";

await serve(({ page }) => ({
  // What a person sees: the rendered list and the status line.
  look: async () => page.evaluate(() => ({
    items: [...document.querySelectorAll("#events li")].map((li) => Number(li.textContent)),
    state: document.getElementById("state").textContent,
    connects: Number(document.getElementById("connects").textContent),
    subscribed: Number(document.getElementById("subscribed").textContent),
    failed: document.getElementById("failed")?.textContent ?? null,
  })),
}));
