// Usage: tokens and cost by key, model or day over a date range, with a CSV export.
import { call } from "./api.js";
import { field, h, notice, number, table } from "./dom.js";

export const title = "Usage";
export const adminOnly = true;
const COLUMNS = [
  ["requests", "Requests", 0], ["errors", "Errors", 0], ["prompt_tokens", "Prompt tokens", 0],
  ["completion_tokens", "Completion tokens", 0], ["cached_tokens", "Cached tokens", 0],
  ["total_tokens", "Total tokens", 0], ["cost", "Cost", 4], ["mean_latency_ms", "Mean latency (ms)", 1],
];

const GROUPS = { key: "Key", model: "Model", day: "Day (UTC)" };

function isoDay(date) {
  return date.toISOString().slice(0, 10);
}

function label(row, groupBy) {
  if (groupBy === "key") return row.key ? `${row.name || "?"} (${row.key})` : "static keys / none";
  return row[groupBy] ?? "—";
}

export function toCsv(rows, groupBy) {
  const quote = (value) => {
    const text = value === null || value === undefined ? "" : String(value);
    return /[",\n\r]/.test(text) ? `"${text.replaceAll('"', '""')}"` : text;
  };
  const head = [groupBy, ...(groupBy === "key" ? ["name"] : []), ...COLUMNS.map(([key]) => key)];
  const lines = rows.map((row) => head.map((key) => quote(row[key])).join(","));
  return [head.join(","), ...lines].join("\r\n") + "\r\n";
}

export function mount(root) {
  const today = new Date();
  const monthAgo = new Date(today.getTime() - 29 * 86400e3);
  const groupBy = h("select", {}, Object.entries(GROUPS).map(([value, text]) => h("option", { value }, text)));
  const since = h("input", { type: "date", value: isoDay(monthAgo) });
  const until = h("input", { type: "date", value: isoDay(today) });
  const show = h("button", { type: "submit" }, "Show");
  const exportButton = h("button", { type: "button", disabled: true }, "Export CSV");
  const result = h("div", { "aria-live": "polite" });
  const form = h("form", { class: "toolbar" }, field("Group by", groupBy), field("From", since),
    field("To (inclusive)", until), show, exportButton);
  root.append(form, result);
  let shown = null;
  let latest = 0; // answers to an older query (slower than a newer one) are dropped

  async function load() {
    const asked = ++latest;
    const query = new URLSearchParams({ group_by: groupBy.value });
    if (since.value) query.set("since", since.value);
    if (until.value) {
      // The API's `until` is exclusive: the day after the last day asked for.
      query.set("until", isoDay(new Date(Date.parse(until.value) + 86400e3)));
    }
    result.replaceChildren(h("p", { class: "muted" }, "Loading…"));
    try {
      const answer = await call("GET", `/admin/usage?${query}`);
      if (asked !== latest) return;
      shown = answer;
      exportButton.disabled = false;
      // A column with no value at all (cost without prices) totals to nothing, not 0.
      const totals = Object.fromEntries(COLUMNS.map(([key]) => [key,
        answer.data.some((row) => row[key] !== null && row[key] !== undefined)
          ? answer.data.reduce((sum, row) => sum + (row[key] || 0), 0) : null]));
      const rows = answer.data.map((row) => h("tr", {},
        h("th", { scope: "row" }, label(row, answer.group_by)),
        COLUMNS.map(([key, , digits]) => h("td", { class: "num" }, number(row[key], digits)))));
      if (answer.data.length) {
        rows.push(h("tr", { class: "total" }, h("th", { scope: "row" }, "Total"),
          COLUMNS.map(([key, , digits]) => h("td", { class: "num" },
            key === "mean_latency_ms" ? "" : number(totals[key], digits)))));
      }
      result.replaceChildren(answer.data.length
        ? table([GROUPS[answer.group_by], ...COLUMNS.map(([, text]) => text)], rows, `Usage by ${answer.group_by}`)
        : h("p", { class: "muted" }, "No requests in this range."));
    } catch (error) {
      if (asked === latest) result.replaceChildren(notice(error.message, "error"));
    }
  }

  form.addEventListener("submit", (event) => { event.preventDefault(); load(); });
  groupBy.addEventListener("change", load);
  exportButton.addEventListener("click", () => {
    const blob = new Blob([toCsv(shown.data, shown.group_by)], { type: "text/csv" });
    const link = h("a", { href: URL.createObjectURL(blob),
      download: `modelport-usage-by-${shown.group_by}-${since.value || "start"}-${until.value || "now"}.csv` });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 1000);
  });
  load();
}
