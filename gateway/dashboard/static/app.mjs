// The dashboard page: sign-in, then a hash router over the views. Each view returns
// { el, stop } so that leaving it stops its polling.
import * as api from "./api.mjs";
import { clear, h } from "./dom.mjs";
import { signInView } from "./views/signin.mjs";
import { overviewView } from "./views/overview.mjs";
import { appView } from "./views/app.mjs";

const main = document.getElementById("main");
let current = null;

function route() {
  const parts = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  if (parts[0] === "apps" && parts[1]) return appView(parts[1], parts[2] || "console", parts.slice(3).join("/"));
  return overviewView();
}

function show(view) {
  current?.stop?.();
  document.getElementById("toast").className = "";
  current = view;
  clear(main, view.el);
}

async function render() {
  try {
    await api.session();
  } catch (error) {
    if (error.status === 401) {
      clear(document.getElementById("who"));
      show(signInView(render));
      return;
    }
    throw error;
  }
  clear(document.getElementById("who"), h("button", {
    class: "link", id: "signout",
    onclick: async () => { await api.signOut(); render(); },
  }, "Sign out"));
  show(route());
}

window.addEventListener("hashchange", render);
render().catch((error) => clear(main, h("p", { class: "error" }, String(error))));
