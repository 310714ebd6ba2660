// The page of tests/xhr/test_xhr_browser.py in headless Chromium (tests/_harness/js/chromium.mjs).
import { serve } from "../../_harness/js/chromium.mjs";

await serve(({ page }) => {
  const requests = [];
  page.on("request", (request) => requests.push(`${request.method()} ${new URL(request.url()).pathname}`));
  return {
    look: async () => page.evaluate(() => ({
      items: [...document.querySelectorAll("#events li")].map((li) => Number(li.textContent)),
      state: document.getElementById("state").textContent,
      transport: document.getElementById("transport").textContent,
      subscribed: Number(document.getElementById("subscribed").textContent),
      websocket: typeof window.WebSocket,
    })),
    requests: async () => ({ lines: requests }),
  };
});
