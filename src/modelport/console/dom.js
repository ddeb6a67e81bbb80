// Building DOM nodes without innerHTML, so nothing from the API is ever parsed as markup.

export function h(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (name === "class") node.className = value;
    else if (name === "value") node.value = value;
    else node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

export function field(label, input, hint) {
  if (!input.id) input.id = `f-${Math.random().toString(36).slice(2, 9)}`;
  return h("div", { class: "field" }, h("label", { for: input.id }, label), input,
    hint ? h("small", {}, hint) : null);
}

export function number(value, digits = 0) {
  if (value === null || value === undefined) return "—";
  return Number(value).toLocaleString("en-US", { maximumFractionDigits: digits });
}

export function when(iso) {
  if (!iso) return "—";
  const date = new Date(typeof iso === "number" ? iso * 1000 : iso);
  return date.toISOString().replace("T", " ").slice(0, 16) + " UTC";
}

export function notice(text, kind = "note") {
  return h("p", { class: kind, role: kind === "error" ? "alert" : null }, text);
}

// On a phone the rows become cards, each cell named by its column (data-label).
export function table(headers, rows, caption) {
  for (const row of rows) {
    [...row.children].forEach((cell, i) => {
      if (!cell.dataset.label && headers[i]) cell.dataset.label = headers[i];
    });
  }
  return h("div", { class: "scroll", tabindex: "0", role: "region", "aria-label": caption },
    h("table", {},
      h("caption", { class: "visually-hidden" }, caption),
      h("thead", {}, h("tr", {}, headers.map((text) => h("th", { scope: "col" }, text)))),
      h("tbody", {}, rows)));
}
