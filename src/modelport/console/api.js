// The one way the console talks to the gateway: every call carries the key it signed in
// with, and the gateway authorizes each one (/v1 any key, /admin the master key).

const STORE = "modelport.console";

export class ApiError extends Error {
  constructor(status, message, code) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export const session = {
  key: sessionStorage.getItem(`${STORE}.key`),
  role: sessionStorage.getItem(`${STORE}.role`), // "admin" (master key) or "reader"
  onExpired: () => {},
  get admin() { return this.role === "admin"; },
};

function remember(key, role) {
  session.key = key;
  session.role = role;
  if (key) {
    sessionStorage.setItem(`${STORE}.key`, key);
    sessionStorage.setItem(`${STORE}.role`, role);
  } else {
    sessionStorage.removeItem(`${STORE}.key`);
    sessionStorage.removeItem(`${STORE}.role`);
  }
}

async function send(method, path, body, signal, key) {
  const headers = { Authorization: `Bearer ${key}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  try {
    return await fetch(path, {
      method, headers, signal, body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(0, `The gateway cannot be reached (${error.message}).`);
  }
}

async function failure(response) {
  let message = `${response.status} ${response.statusText}`;
  let code = null;
  try {
    const error = (await response.json()).error;
    if (error && error.message) ({ message, code } = error);
  } catch { /* not JSON: keep the status line */ }
  return new ApiError(response.status, message, code);
}

// JSON in, JSON out; a refused key ends the session.
export async function call(method, path, body, { signal } = {}) {
  const response = await stream(method, path, body, { signal });
  return response.status === 204 ? null : response.json();
}

// The raw response (for streams), after the same checks.
export async function stream(method, path, body, { signal, key = session.key } = {}) {
  const response = await send(method, path, body, signal, key);
  if (response.ok) return response;
  const error = await failure(response);
  if (error.status === 401 && key === session.key && session.key) {
    signOut();
    session.onExpired(error.message);
  }
  throw error;
}

export async function signIn(key) {
  const admin = await send("GET", "/admin/keys", undefined, undefined, key);
  if (admin.ok) return remember(key, "admin");
  const refused = await failure(admin);
  if (refused.status !== 401 && refused.status !== 403) throw refused;
  const reader = await send("GET", "/v1/models", undefined, undefined, key);
  if (reader.ok) return remember(key, "reader");
  const error = await failure(reader);
  if (error.status === 401) {
    throw new ApiError(401, "This key was refused: it is neither the master key nor an " +
      `API key of this gateway (${refused.message}).`);
  }
  throw error;
}

export function signOut() {
  remember(null, null);
}
