// A small SVG line chart: one or two series over time, gaps where a value is missing.
import { number } from "./dom.js";

const NS = "http://www.w3.org/2000/svg";
// In the units of the viewBox, which a chart card shows at about its own size.
const WIDTH = 360;
const HEIGHT = 150;
const PAD = { left: 40, right: 6, top: 8, bottom: 20 };

function svg(tag, attrs, ...children) {
  const node = document.createElementNS(NS, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  node.append(...children);
  return node;
}

function clock(seconds, withSeconds) {
  return new Date(seconds * 1000).toTimeString().slice(0, withSeconds ? 8 : 5);
}

// times: Unix seconds; series: [{label, values, css}] with values aligned to times.
export function lineChart(times, series, unit) {
  const values = series.flatMap((s) => s.values.filter((v) => v !== null && v !== undefined));
  const peak = Math.max(...values, 0);
  const scale = peak > 0 ? peak : 1; // an all-zero chart still gets a 0..1 axis
  const top = scale * 1.1;
  const end = times.length ? times[times.length - 1] : Date.now() / 1000;
  const start = times.length > 1 ? times[0] : end - 60;
  const span = Math.max(end - start, 1);
  const x = (t) => PAD.left + ((t - start) / span) * (WIDTH - PAD.left - PAD.right);
  const y = (v) => HEIGHT - PAD.bottom - (v / top) * (HEIGHT - PAD.top - PAD.bottom);
  const chart = svg("svg", {
    viewBox: `0 0 ${WIDTH} ${HEIGHT}`, class: "chart", role: "img", focusable: "false",
  });
  for (const fraction of [0, 0.5, 1]) {
    const value = scale * fraction;
    chart.append(svg("line", { class: "grid", x1: PAD.left, x2: WIDTH - PAD.right,
      y1: y(value), y2: y(value) }));
    chart.append(svg("text", { class: "axis", x: PAD.left - 6, y: y(value) + 4,
      "text-anchor": "end" }, number(value, value < 10 ? 2 : 0)));
  }
  chart.append(svg("text", { class: "axis", x: PAD.left, y: HEIGHT - 4 }, clock(start, span < 600)));
  chart.append(svg("text", { class: "axis", x: WIDTH - PAD.right, y: HEIGHT - 4,
    "text-anchor": "end" }, clock(end, span < 600)));
  let drawn = 0;
  for (const { values, css } of series) {
    let path = "";
    let pen = false;
    values.forEach((value, i) => {
      if (value === null || value === undefined) { pen = false; return; }
      path += `${pen ? "L" : "M"}${x(times[i]).toFixed(1)},${y(value).toFixed(1)}`;
      pen = true;
      drawn += 1;
    });
    if (path) chart.append(svg("path", { class: `line ${css}`, d: path }));
    // A lone point between gaps has no line to show it: mark every point.
    values.forEach((value, i) => {
      if (value !== null && value !== undefined) {
        chart.append(svg("circle", { class: `dot ${css}`, cx: x(times[i]), cy: y(value), r: 2 }));
      }
    });
  }
  chart.dataset.points = String(drawn);
  chart.dataset.max = String(peak);
  const latest = series.map((s) => {
    const last = [...s.values].reverse().find((v) => v !== null && v !== undefined);
    return `${s.label} ${last === undefined ? "no data" : `${number(last, 3)} ${unit}`}`;
  });
  chart.setAttribute("aria-label", `Latest: ${latest.join(", ")}`);
  return chart;
}
