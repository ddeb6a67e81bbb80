// Playground: a streaming chat with stop, its speed and the code to do the same; and
// embeddings and rerank try-outs.
import { call, stream } from "./api.js";
import { field, h, notice, number, table } from "./dom.js";

export const title = "Playground";

// Server-sent events from a fetch body: yields each `data:` payload.
async function* events(body) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.search(/\r?\n\r?\n/)) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end).replace(/^\r?\n\r?\n/, "");
      const data = block.split(/\r?\n/).filter((l) => l.startsWith("data:"))
        .map((l) => l.slice(5).trimStart()).join("\n");
      if (data) yield data;
    }
  }
}

function snippets(body) {
  const origin = location.origin;
  const json = JSON.stringify(body, null, 2);
  const curl = `curl ${origin}/v1/chat/completions \\\n  -H "Authorization: Bearer $MODELPORT_API_KEY" \\\n` +
    `  -H "Content-Type: application/json" \\\n  -d '${json.replaceAll("'", "'\\''")}'`;
  const messages = JSON.stringify(body.messages, null, 4).replace(/\n/g, "\n    ");
  const python = `import os\nfrom openai import OpenAI\n\n` +
    `client = OpenAI(base_url="${origin}/v1", api_key=os.environ["MODELPORT_API_KEY"])\n` +
    `stream = client.chat.completions.create(\n    model=${JSON.stringify(body.model)},\n` +
    `    messages=${messages},\n    temperature=${body.temperature},\n` +
    `    max_tokens=${body.max_tokens},\n    stream=True,\n)\n` +
    `for chunk in stream:\n    if chunk.choices:\n        print(chunk.choices[0].delta.content or "", end="", flush=True)\n`;
  return { curl, python };
}

function chat(models) {
  const chatModels = models.filter((m) => m.kind === "chat");
  const model = h("select", {}, chatModels.map((m) => h("option", { value: m.id }, `${m.id} (${m.status})`)));
  const system = h("textarea", { rows: "2", placeholder: "You are a helpful assistant." });
  const temperature = h("input", { type: "number", min: "0", max: "2", step: "0.1", value: "0.7" });
  const maxTokens = h("input", { type: "number", min: "1", step: "1", value: "256" });
  const transcript = h("div", { class: "transcript", role: "log", "aria-live": "polite", "aria-label": "Conversation" });
  const prompt = h("textarea", { rows: "3", placeholder: "Ask something… (Enter sends, Shift+Enter starts a new line)" });
  const send = h("button", { type: "submit" }, "Send");
  const stop = h("button", { type: "button", disabled: true }, "Stop");
  const clear = h("button", { type: "button" }, "Clear");
  const stats = h("p", { class: "muted stats", role: "status" });
  const curl = h("pre", { tabindex: "0" }, h("code"));
  const python = h("pre", { tabindex: "0" }, h("code"));
  const history = [];
  let controller = null;

  function request(messages) {
    const body = { model: model.value, messages, temperature: Number(temperature.value),
      max_tokens: Number(maxTokens.value) };
    const code = snippets({ ...body, stream: true });
    curl.firstChild.textContent = code.curl;
    python.firstChild.textContent = code.python;
    return { ...body, stream: true, stream_options: { include_usage: true } };
  }

  function conversation(text) {
    const messages = system.value.trim() ? [{ role: "system", content: system.value.trim() }] : [];
    return [...messages, ...history, ...(text ? [{ role: "user", content: text }] : [])];
  }

  async function ask(event) {
    event.preventDefault();
    const text = prompt.value.trim();
    if (!text || controller) return;
    const body = request(conversation(text));
    history.push({ role: "user", content: text });
    transcript.append(h("div", { class: "msg user" }, h("strong", {}, "You"), h("p", {}, text)));
    const answer = h("p", { class: "streaming" });
    const bubble = h("div", { class: "msg assistant", "data-streaming": "true" }, h("strong", {}, body.model), answer);
    transcript.append(bubble);
    prompt.value = "";
    controller = new AbortController();
    send.disabled = true;
    stop.disabled = false;
    const started = performance.now();
    let first = null;
    let tokens = null;
    let chunks = 0;
    let ending = "";
    try {
      const response = await stream("POST", "/v1/chat/completions", body, { signal: controller.signal });
      for await (const data of events(response.body)) {
        if (data === "[DONE]") break;
        const chunk = JSON.parse(data);
        if (chunk.error) throw new Error(chunk.error.message);
        if (chunk.usage) tokens = chunk.usage.completion_tokens;
        const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
        if (delta && delta.content) {
          if (first === null) first = performance.now();
          chunks += 1;
          answer.textContent += delta.content;
          transcript.scrollTop = transcript.scrollHeight;
        }
      }
    } catch (error) {
      ending = error.name === "AbortError" ? "stopped" : error.message;
    }
    const ended = performance.now();
    history.push({ role: "assistant", content: answer.textContent });
    bubble.dataset.streaming = "false";
    answer.classList.remove("streaming");
    if (ending) bubble.append(notice(ending === "stopped" ? "Stopped." : ending, ending === "stopped" ? "note" : "error"));
    const count = tokens ?? chunks;
    const ttft = first === null ? null : first - started;
    const rate = first !== null && ended > first ? count / ((ended - first) / 1000) : null;
    stats.textContent = `TTFT ${ttft === null ? "—" : `${number(ttft)} ms`} · ${number(count)} tokens · ` +
      `${rate === null ? "—" : number(rate, 1)} tokens/s`;
    bubble.append(h("small", { class: "muted" }, stats.textContent));
    controller = null;
    send.disabled = false;
    stop.disabled = true;
    prompt.focus();
  }

  const form = h("form", { class: "card chat" },
    h("div", { class: "form-grid" }, field("Model", model), field("Temperature", temperature),
      field("Max tokens", maxTokens)),
    field("System prompt", system), transcript, field("Message", prompt),
    h("div", { class: "row" }, send, stop, clear), stats);
  form.addEventListener("submit", ask);
  prompt.addEventListener("keydown", (event) => {
    // An Enter that ends an input method's composition (pinyin and the like) only picks
    // the characters; it must not send a half-typed message.
    if (event.key !== "Enter" || event.shiftKey || event.isComposing || event.keyCode === 229) return;
    event.preventDefault();
    form.requestSubmit();
  });
  stop.addEventListener("click", () => controller && controller.abort());
  clear.addEventListener("click", () => { history.length = 0; transcript.replaceChildren(); stats.textContent = ""; });
  for (const input of [model, system, temperature, maxTokens]) input.addEventListener("change", () => request(conversation("")));
  if (chatModels.length) request(conversation("Hello!"));
  return h("div", {}, chatModels.length ? form : notice("No chat model is served here."),
    h("details", { class: "card" }, h("summary", {}, "The same request with curl"), curl),
    h("details", { class: "card" }, h("summary", {}, "The same request in Python (openai)"), python));
}

function embeddings(models) {
  const usable = models.filter((m) => m.kind === "embedding");
  if (!usable.length) return notice("No embedding model is served here.");
  const model = h("select", {}, usable.map((m) => h("option", { value: m.id }, m.id)));
  const input = h("textarea", { rows: "3" }, "The cat sat on the mat.\nA feline rested on the rug.");
  const out = h("div", { "aria-live": "polite" });
  const form = h("form", { class: "card" }, h("h2", {}, "Embeddings"), field("Model", model),
    field("Texts, one a line", input), h("button", { type: "submit" }, "Embed"), out);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const texts = input.value.split("\n").map((t) => t.trim()).filter(Boolean);
    try {
      const answer = await call("POST", "/v1/embeddings", { model: model.value, input: texts });
      const vectors = answer.data.map((d) => d.embedding);
      const cosine = (a, b) => a.reduce((s, v, i) => s + v * b[i], 0) /
        Math.sqrt(a.reduce((s, v) => s + v * v, 0) * b.reduce((s, v) => s + v * v, 0));
      out.replaceChildren(h("p", {}, `${vectors.length} vectors of ${vectors[0].length} dimensions.`),
        vectors.length > 1 ? h("p", {}, `Cosine similarity of the first two: ${number(cosine(vectors[0], vectors[1]), 3)}`) : null,
        h("pre", {}, vectors.map((v, i) => `${i}: [${v.slice(0, 6).map((x) => x.toFixed(4)).join(", ")}, …]`).join("\n")));
    } catch (error) {
      out.replaceChildren(notice(error.message, "error"));
    }
  });
  return form;
}

function rerank(models) {
  const usable = models.filter((m) => m.rerank);
  if (!usable.length) return notice("No model here can rerank.");
  const model = h("select", {}, usable.map((m) => h("option", { value: m.id }, m.id)));
  const query = h("input", { value: "Where do cats sleep?" });
  const documents = h("textarea", { rows: "3" }, "Cats sleep on sofas.\nThe stock market fell.\nDogs bark at night.");
  const out = h("div", { "aria-live": "polite" });
  const form = h("form", { class: "card" }, h("h2", {}, "Rerank"), field("Model", model), field("Query", query),
    field("Documents, one a line", documents), h("button", { type: "submit" }, "Rerank"), out);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const docs = documents.value.split("\n").map((t) => t.trim()).filter(Boolean);
    try {
      const answer = await call("POST", "/v1/rerank", { model: model.value, query: query.value, documents: docs });
      out.replaceChildren(table(["Document", "Score"], answer.results.map((r) => h("tr", {},
        h("td", {}, docs[r.index]), h("td", { class: "num" }, number(r.relevance_score, 4)))), "Ranked documents"));
    } catch (error) {
      out.replaceChildren(notice(error.message, "error"));
    }
  });
  return form;
}

export function mount(root) {
  root.append(h("p", { class: "muted" }, "Loading models…"));
  call("GET", "/v1/models").then((listing) => {
    root.replaceChildren(chat(listing.data), h("h2", {}, "Try embeddings and rerank"),
      h("div", { class: "two" }, embeddings(listing.data), rerank(listing.data)));
  }).catch((error) => root.replaceChildren(notice(error.message, "error")));
}
