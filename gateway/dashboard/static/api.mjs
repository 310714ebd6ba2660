// The dashboard's JSON API: same-origin requests with the session cookie; actions carry the
// CSRF token the session gave us.
let csrf = null;

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function call(method, path, body) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && csrf) headers["X-CSRF-Token"] = csrf;
  const response = await fetch(`/dashboard/api${path}`, {
    method, headers, credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new ApiError(response.status, data.error || response.statusText);
  return data;
}

export const get = (path) => call("GET", path);
export const post = (path, body = {}) => call("POST", path, body);

export async function session() {
  const data = await get("/session");
  csrf = data.csrf;
  return data;
}

export async function signIn(token) {
  const data = await post("/signin", { token });
  csrf = data.csrf;
  return data;
}

export async function signOut() {
  await post("/signout");
  csrf = null;
}

export const appPath = (appId, rest = "") => `/apps/${encodeURIComponent(appId)}${rest}`;
