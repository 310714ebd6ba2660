import * as api from "../api.mjs";
import { h } from "../dom.mjs";

export function signInView(done) {
  const error = h("p", { class: "error", id: "signin-error", hidden: true });
  const input = h("input", { id: "token", type: "password", autocomplete: "current-password",
    placeholder: "Admin token", required: true, autofocus: true });
  const form = h("form", {
    id: "signin-form", class: "card narrow",
    onsubmit: async (event) => {
      event.preventDefault();
      error.hidden = true;
      try {
        await api.signIn(input.value);
        input.value = "";
        done();
      } catch (e) {
        error.textContent = e.status === 401 ? "Wrong admin token." : `Sign-in failed: ${e.message}`;
        error.hidden = false;
      }
    },
  },
  h("h1", {}, "Sign in"),
  h("p", { class: "muted" }, "The admin token is dashboard.admin_token in the configuration (clarion up prints one)."),
  input, h("button", { type: "submit" }, "Sign in"), error);
  return { el: form };
}
