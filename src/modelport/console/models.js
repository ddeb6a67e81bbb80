// Models: every served model with its state, load and controls, refreshed every 2 s.
import { ApiError, call, session } from "./api.js";
import { h, notice, number, table, when } from "./dom.js";

export const title = "Models";
const REFRESH_MS = 2000;
const IDLE = new Set(["stopped", "unloaded", "failed"]);
const BUSY = new Set(["starting", "loading", "restarting", "unloading"]);

function bytes(value) {
  if (value === null || value === undefined) return "—";
  const mib = value / 2 ** 20;
  return mib >= 1024 ? `${number(mib / 1024, 1)} GiB` : `${number(mib, 0)} MiB`;
}

// Requests waiting in the gateway's queue for the model, and how long the oldest has.
function queued(queue) {
  if (!queue) return "—";
  if (!queue.length) return "0";
  return `${number(queue.length)} (oldest ${number(queue.oldest_wait_s, 1)} s)`;
}

export function mount(root) {
  const status = h("p", { role: "status", "aria-live": "polite" });
  const updated = h("p", { class: "muted" }, "Loading…");
  const problem = h("div");
  const controlNote = h("p", { class: "note", hidden: true });
  const tbody = h("tbody");
  const headers = ["Model", "Kind", "Engine", "State"].concat(session.admin
    ? ["In flight", "Queued", "Restarts", "Memory", "Last used", "Last error", "Actions"] : []);
  const grid = table(headers, [], "Models served by this gateway");
  grid.querySelector("tbody").replaceWith(tbody);
  // Memory, last use and the queue come only with model control (GET /admin/models).
  const CONTROL_ONLY = ["Queued", "Memory", "Last used"];
  grid.querySelectorAll("thead th").forEach((th) => {
    if (CONTROL_ONLY.includes(th.textContent)) th.dataset.col = "control";
  });
  // Each device's memory against its budget (server.memory_budget), under the table.
  const devices = h("p", { class: "muted", "data-memory": "devices" });
  root.append(updated, problem, status, controlNote, grid, devices);
  const rows = new Map();
  let controls = session.admin ? "unknown" : "off"; // "on" once GET /admin/models answers
  let stopped = false;
  let timer = null;

  async function act(name, verbs) {
    status.textContent = `${verbs.join(" then ")}: ${name}…`;
    try {
      for (const verb of verbs) {
        await call("POST", `/admin/models/${encodeURIComponent(name)}/${verb}`);
      }
      status.textContent = `${name}: ${verbs.join(" then ")} requested.`;
    } catch (error) {
      status.textContent = `${name}: ${error.message}`;
    }
    refresh();
  }

  function rowFor(name) {
    if (rows.has(name)) return rows.get(name);
    const labelled = session.admin ? headers.slice(0, -1) : headers;
    const cells = Object.fromEntries(labelled.map((key) => [key, h("td", { "data-label": key,
      "data-col": CONTROL_ONLY.includes(key) ? "control" : null })]));
    cells.Model = h("th", { scope: "row" });
    const buttons = {
      load: h("button", { type: "button", onclick: () => act(name, ["load"]) }, "Load"),
      unload: h("button", { type: "button", onclick: () => act(name, ["unload"]) }, "Unload"),
      restart: h("button", { type: "button", onclick: () => act(name, ["unload", "load"]) },
        "Restart"),
    };
    for (const [verb, button] of Object.entries(buttons)) {
      button.setAttribute("aria-label", `${button.textContent} ${name}`);
      button.dataset.action = verb;
    }
    const actions = session.admin ? h("td", { "data-label": "Actions" },
      h("div", { class: "actions" }, Object.values(buttons))) : null;
    const row = h("tr", { "data-model": name }, Object.values(cells), actions);
    const entry = { row, cells, buttons, actions };
    rows.set(name, entry);
    tbody.append(row);
    return entry;
  }

  function paint(name, info) {
    const { cells, buttons, actions } = rowFor(name);
    cells.Model.replaceChildren(h("span", {}, name),
      info.aliases && info.aliases.length ? h("small", { class: "muted" }, `alias ${info.aliases.join(", ")}`) : "");
    cells.Kind.textContent = info.kind || "—";
    cells.Engine.textContent = info.engine || "—";
    cells.State.replaceChildren(h("span", { class: `badge state-${info.state}` }, info.state));
    if (!session.admin) return;
    cells["In flight"].textContent = number(info.in_flight);
    cells.Queued.textContent = queued(info.queue);
    cells.Restarts.textContent = number(info.restarts);
    cells.Memory.textContent = bytes(info.memory_bytes);
    cells["Last used"].textContent = info.last_used ? when(info.last_used) : "—";
    cells["Last error"].textContent = info.last_error || "—";
    actions.hidden = false;
    const on = controls === "on";
    buttons.load.disabled = !on || !IDLE.has(info.state);
    buttons.unload.disabled = !on || IDLE.has(info.state);
    buttons.restart.disabled = !on || BUSY.has(info.state) || info.state === "unloaded";
  }

  function paintDevices(memory) {
    const parts = Object.entries(memory).map(([device, use]) => {
      const budget = use.budget_bytes ? ` of ${bytes(use.budget_bytes)}` : "";
      const who = use.models.length ? ` (${use.models.join(", ")})` : "";
      return `${device}: ${bytes(use.used_bytes)}${budget}${who}`;
    });
    devices.textContent = parts.length ? `Memory — ${parts.join(" · ")}` : "";
  }

  async function controlled() {
    if (controls === "off") return null;
    try {
      const listing = await call("GET", "/admin/models");
      controls = "on";
      controlNote.hidden = true;
      grid.classList.remove("no-control");
      paintDevices(listing.memory || {});
      return Object.fromEntries(listing.data.map((m) => [m.name, m]));
    } catch (error) {
      if (!(error instanceof ApiError) || error.status !== 404) throw error;
      controls = "off";
      controlNote.hidden = false;
      grid.classList.add("no-control");
      controlNote.textContent = "Load, unload and restart need a gateway with on-demand " +
        "model control (GET /admin/models); this one does not offer it.";
      return null;
    }
  }

  async function refresh() {
    clearTimeout(timer);
    try {
      const [listing, control, history] = await Promise.all([
        call("GET", "/v1/models"),
        controlled(),
        session.admin ? call("GET", `/admin/metrics/history?since=${Date.now() / 1000}`) : null,
      ]);
      if (stopped) return;
      for (const card of listing.data) {
        const live = (history && history.live[card.id]) || {};
        const detail = (control && control[card.id]) || {};
        paint(card.id, {
          ...card, ...live, ...detail,
          state: detail.state || live.status || card.status,
        });
      }
      updated.textContent = `Updated ${new Date().toLocaleTimeString()}, every ${REFRESH_MS / 1000} s`;
      problem.replaceChildren();
      root.dataset.ready = "true";
    } catch (error) {
      if (stopped) return;
      problem.replaceChildren(notice(`Could not refresh: ${error.message}`, "error"));
    }
    if (!stopped) timer = setTimeout(refresh, REFRESH_MS);
  }

  refresh();
  return () => { stopped = true; clearTimeout(timer); };
}
