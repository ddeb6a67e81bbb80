// The console's shell: sign-in, navigation between pages, the theme switch.
import { session, signIn, signOut } from "./api.js";
import { h } from "./dom.js";
import * as models from "./models.js";
import * as metrics from "./metrics.js";
import * as usage from "./usage.js";
import * as keys from "./keys.js";
import * as playground from "./playground.js";

const PAGES = { models, metrics, usage, keys, playground };
const view = document.getElementById("view");
const nav = document.getElementById("nav");
const login = document.getElementById("login");
const loginError = document.getElementById("login-error");
let leave = () => {};

function showLogin(message = "") {
  leave();
  leave = () => {};
  view.replaceChildren();
  nav.hidden = true;
  document.getElementById("signout").hidden = true;
  login.hidden = false;
  loginError.textContent = message;
  document.getElementById("login-key").focus();
}

function route() {
  if (!session.key) return showLogin();
  login.hidden = true;
  nav.hidden = false;
  document.getElementById("signout").hidden = false;
  for (const link of nav.querySelectorAll("[data-admin]")) link.hidden = !session.admin;
  let name = location.hash.replace(/^#\//, "") || "models";
  if (!(name in PAGES) || (PAGES[name].adminOnly && !session.admin)) name = "models";
  for (const link of nav.querySelectorAll("a")) {
    if (link.dataset.page === name) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  leave();
  const page = PAGES[name];
  document.title = `${page.title} · modelport console`;
  const heading = h("h1", { tabindex: "-1" }, page.title);
  const body = h("section", { class: "page", "aria-labelledby": "page-title" });
  heading.id = "page-title";
  const banner = session.admin ? null : h("p", { class: "note" },
    "Read-only: signed in with an API key. Sign in with the master key for metrics, " +
    "usage, keys and model controls.");
  view.replaceChildren(heading, ...(banner ? [banner] : []), body);
  leave = page.mount(body) || (() => {});
  if (document.activeElement && document.activeElement.closest("#nav")) heading.focus();
}

login.addEventListener("submit", async (event) => {
  event.preventDefault();
  const button = login.querySelector("button");
  button.disabled = true;
  loginError.textContent = "";
  try {
    await signIn(document.getElementById("login-key").value.trim());
    document.getElementById("login-key").value = "";
    route();
  } catch (error) {
    loginError.textContent = error.message;
  } finally {
    button.disabled = false;
  }
});

document.getElementById("signout").addEventListener("click", () => {
  signOut();
  showLogin("Signed out.");
});

const themeButton = document.getElementById("theme");
function paintThemeButton() {
  const dark = document.documentElement.dataset.theme === "dark";
  themeButton.textContent = dark ? "Light" : "Dark";
  themeButton.setAttribute("aria-pressed", String(dark));
  themeButton.setAttribute("aria-label", dark ? "Switch to the light theme" : "Switch to the dark theme");
}
themeButton.addEventListener("click", () => {
  const next = document.documentElement.dataset.theme === "dark" ? "light" : "dark";
  document.documentElement.dataset.theme = next;
  try { localStorage.setItem("modelport.theme", next); } catch { /* storage off */ }
  paintThemeButton();
});
paintThemeButton();

// The skip link moves the focus itself: following its #main would change the page route.
document.querySelector(".skip").addEventListener("click", (event) => {
  event.preventDefault();
  document.getElementById("main").focus();
});

session.onExpired = (message) => showLogin(`Signed out: ${message}`);
window.addEventListener("hashchange", route);
route();
