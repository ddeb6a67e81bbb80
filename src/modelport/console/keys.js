// Keys: create (the secret shown once), list, edit limits, revoke.
import { call } from "./api.js";
import { field, h, notice, number, table, when } from "./dom.js";

export const title = "Keys";
export const adminOnly = true;
const LIMITS = [
  ["rpm", "Requests per minute"], ["tpm", "Tokens per minute"],
  ["max_parallel", "Requests at once"], ["budget_tokens", "Token budget"],
];

function limitInputs(key = {}) {
  const inputs = Object.fromEntries(LIMITS.map(([name]) => [name,
    h("input", { type: "number", min: "1", step: "1", inputmode: "numeric", name,
      value: key[name] ?? "", placeholder: "no limit" })]));
  inputs.budget_period = h("select", { name: "budget_period" },
    ["total", "month", "day"].map((p) => h("option", { value: p }, p)));
  inputs.budget_period.value = key.budget_period || "total";
  return inputs;
}

function limitFields(inputs) {
  return [...LIMITS.map(([name, text]) => field(text, inputs[name])),
    field("Budget period", inputs.budget_period)];
}

function limitValues(inputs) {
  const values = Object.fromEntries(LIMITS.map(([name]) => [name,
    inputs[name].value === "" ? null : Number(inputs[name].value)]));
  values.budget_period = inputs.budget_period.value;
  return values;
}

function state(key) {
  if (key.revoked) return "revoked";
  return key.expired ? "expired" : "active";
}

function limitsText(key) {
  const parts = [];
  if (key.rpm) parts.push(`${number(key.rpm)} rpm`);
  if (key.tpm) parts.push(`${number(key.tpm)} tpm`);
  if (key.max_parallel) parts.push(`${number(key.max_parallel)} at once`);
  if (key.budget_tokens) parts.push(`${number(key.budget_tokens)} tokens/${key.budget_period}`);
  return parts.join(", ") || "none";
}

export function mount(root) {
  const message = h("div", { "aria-live": "polite" });
  const list = h("div");
  const name = h("input", { required: true, maxlength: "200", autocomplete: "off" });
  const models = h("input", { autocomplete: "off", placeholder: "every model" });
  const expires = h("input", { type: "datetime-local" });
  const limits = limitInputs();
  const create = h("form", { class: "card form-grid", "aria-label": "Create a key" },
    h("h2", {}, "Create a key"), field("Name", name),
    field("Models", models, "Comma-separated names or aliases; empty for every model."),
    ...limitFields(limits), field("Expires (UTC)", expires),
    h("div", { class: "row" }, h("button", { type: "submit" }, "Create key")));
  const dialog = h("dialog", { "aria-labelledby": "edit-title" });
  root.append(message, create, h("h2", {}, "Keys"), list, dialog);

  async function load() {
    try {
      const keys = (await call("GET", "/admin/keys")).data;
      const rows = keys.map((key) => h("tr", { "data-key": key.id },
        h("th", { scope: "row" }, key.name),
        h("td", {}, h("code", {}, `${key.key_prefix}…`)),
        h("td", {}, key.models ? key.models.join(", ") : "all"),
        h("td", {}, limitsText(key)),
        h("td", {}, when(key.expires_at)),
        h("td", {}, h("span", { class: `badge key-${state(key)}` }, state(key))),
        h("td", {}, when(key.created_at)),
        h("td", {}, h("div", { class: "actions" }, key.revoked ? null : [
          h("button", { type: "button", "aria-label": `Edit limits of ${key.name}`,
            onclick: () => edit(key) }, "Edit limits"),
          h("button", { type: "button", class: "danger", "aria-label": `Revoke ${key.name}`,
            onclick: () => revoke(key) }, "Revoke"),
        ]))));
      list.replaceChildren(keys.length
        ? table(["Name", "Key", "Models", "Limits", "Expires", "State", "Created", "Actions"], rows, "API keys")
        : h("p", { class: "muted" }, "No keys yet."));
    } catch (error) {
      list.replaceChildren(notice(error.message, "error"));
    }
  }

  create.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = { name: name.value.trim(), ...limitValues(limits) };
    const names = models.value.split(",").map((m) => m.trim()).filter(Boolean);
    if (names.length) body.models = names;
    if (expires.value) body.expires_at = `${expires.value}:00Z`;
    for (const [key, value] of Object.entries(body)) if (value === null) delete body[key];
    try {
      const made = await call("POST", "/admin/keys", body);
      const secret = h("input", { readonly: true, value: made.key, class: "secret",
        "aria-label": "The new key's secret" });
      const copy = h("button", { type: "button", onclick: async () => {
        secret.select();
        try { await navigator.clipboard.writeText(made.key); copy.textContent = "Copied"; }
        catch { copy.textContent = "Select and copy it"; }
      } }, "Copy");
      message.replaceChildren(h("div", { class: "card secret-box", role: "alert" },
        h("p", {}, h("strong", {}, `Key “${made.name}” created.`),
          " Copy its secret now: it is shown only this once."),
        h("div", { class: "row" }, secret, copy,
          h("button", { type: "button", onclick: () => message.replaceChildren() }, "Done"))));
      secret.focus();
      secret.select();
      create.reset();
      load();
    } catch (error) {
      message.replaceChildren(notice(`The key was not created: ${error.message}`, "error"));
    }
  });

  async function revoke(key) {
    if (!window.confirm(`Revoke the key “${key.name}”? Requests with it are refused from now on.`)) return;
    try {
      await call("DELETE", `/admin/keys/${encodeURIComponent(key.id)}`);
      message.replaceChildren(h("p", { class: "note" }, `Key “${key.name}” revoked.`));
    } catch (error) {
      message.replaceChildren(notice(error.message, "error"));
    }
    load();
  }

  function edit(key) {
    const inputs = limitInputs(key);
    const problem = h("p", { class: "error", role: "alert" });
    const form = h("form", { class: "form-grid" },
      h("h2", { id: "edit-title" }, `Limits of “${key.name}”`), ...limitFields(inputs),
      h("small", {}, "An empty field lifts that limit."), problem,
      h("div", { class: "row" }, h("button", { type: "submit" }, "Save"),
        h("button", { type: "button", onclick: () => dialog.close() }, "Cancel")));
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      try {
        await call("PATCH", `/admin/keys/${encodeURIComponent(key.id)}`, limitValues(inputs));
        dialog.close();
        message.replaceChildren(h("p", { class: "note" }, `Limits of “${key.name}” saved.`));
        load();
      } catch (error) {
        problem.textContent = error.message;
      }
    });
    dialog.replaceChildren(form);
    dialog.showModal();
  }

  load();
}
