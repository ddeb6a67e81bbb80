// Metrics: the last hour per model (or all together), from GET /admin/metrics/history.
import { call } from "./api.js";
import { h, notice } from "./dom.js";
import { lineChart } from "./chart.js";

export const title = "Metrics";
export const adminOnly = true;
const REFRESH_MS = 5000;
const CHARTS = [
  { title: "Requests per second", unit: "req/s", series: [["requests", "requests_per_s", "a"]] },
  { title: "Tokens per second", unit: "tok/s", series: [["tokens", "tokens_per_s", "a"]] },
  { title: "Latency", unit: "s", series: [["p50", "latency_p50_s", "a"], ["p95", "latency_p95_s", "b"]] },
  { title: "Time to first token", unit: "s", series: [["p50", "ttft_p50_s", "a"], ["p95", "ttft_p95_s", "b"]] },
  { title: "In flight", unit: "requests", series: [["in flight", "in_flight", "a"]] },
  { title: "Errors (status 400 and up, as Usage counts them), of which 429", unit: "req/s", series: [["errors", "errors_per_s", "c"], ["429", "rate_limited_per_s", "b"]] },
];

export function mount(root) {
  const picker = h("select", { id: "metrics-model" });
  const info = h("p", { class: "muted", role: "status" }, "Loading…");
  const grid = h("div", { class: "charts" });
  root.append(h("div", { class: "toolbar" }, h("label", { for: "metrics-model" }, "Model"), picker),
    info, grid);
  let history = null;
  let stopped = false;
  let timer = null;

  function merge(update) {
    if (!history) return update;
    const capacity = Math.round(update.window_s / update.interval_s);
    const drop = Math.max(0, history.times.length + update.times.length - capacity);
    const times = history.times.concat(update.times).slice(drop);
    const models = {};
    for (const [name, series] of Object.entries(update.models)) {
      const before = history.models[name] || {};
      models[name] = Object.fromEntries(Object.entries(series).map(([key, values]) => [key,
        (before[key] || new Array(history.times.length).fill(null)).concat(values).slice(drop)]));
    }
    return { ...update, times, models };
  }

  function draw() {
    const names = Object.keys(history.models).filter((n) => n !== history.total).sort();
    const options = [[history.total, "All models"], ...names.map((n) => [n, n])];
    if (picker.options.length !== options.length) {
      const chosen = picker.value || history.total;
      picker.replaceChildren(...options.map(([value, label]) => h("option", { value }, label)));
      picker.value = options.some(([v]) => v === chosen) ? chosen : history.total;
    }
    const series = history.models[picker.value] || {};
    grid.replaceChildren(...CHARTS.map((chart) => h("figure", { class: "card", "data-chart": chart.series[0][1] },
      h("figcaption", {}, `${chart.title} (${chart.unit})`, h("span", { class: "legend" }, chart.series.map(([label, , css]) =>
        h("span", { class: `key ${css}` }, label)))),
      lineChart(history.times, chart.series.map(([label, key, css]) =>
        ({ label, css, values: series[key] || [] })), chart.unit))));
    const minutes = Math.round((history.times.length * history.interval_s) / 60);
    info.textContent = history.times.length
      ? `A sample every ${history.interval_s} s; ${history.times.length} samples (${minutes} min) so far, up to one hour.`
      : `The first sample arrives ${history.interval_s * 2} s after the gateway starts.`;
  }

  async function refresh() {
    try {
      const since = history && history.times.length ? history.times[history.times.length - 1] : null;
      const update = await call("GET", "/admin/metrics/history" + (since ? `?since=${since}` : ""));
      if (stopped) return;
      if (!update.enabled) {
        info.replaceChildren(notice("Metrics are off on this gateway (server.metrics: false).", "note"));
        return;
      }
      history = merge(update);
      draw();
    } catch (error) {
      if (stopped) return;
      info.replaceChildren(notice(`Could not load the metrics: ${error.message}`, "error"));
    }
    if (!stopped) timer = setTimeout(refresh, REFRESH_MS);
  }

  picker.addEventListener("change", () => history && draw());
  refresh();
  return () => { stopped = true; clearTimeout(timer); };
}
