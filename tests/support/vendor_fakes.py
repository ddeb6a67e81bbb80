"""A programmable fake online API, and what each vendor documents it expects and answers.

VendorFake records every request (path, query, headers, JSON body) and answers from a
queue of scripted replies: JSON, an SSE stream, a hang, or a dropped connection. The
VENDORS table holds, per vendor, the request facts from its public API docs (path under
the documented base URL, how the key is sent) and an answer plus a stream in the
vendor's own documented format (their quirks included: Spark's code/sid and `data:`
without a space, MiniMax's base_resp, Azure's prompt_filter_results, DashScope's
usage-only last chunk, Moonshot's usage inside the last choice).
"""

from __future__ import annotations

import asyncio
import json
import threading
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from support.server import free_port


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any


@dataclass
class Reply:
    status: int = 200
    json: Any = None
    events: list[bytes] | None = None  # raw SSE bytes, sent one write each
    headers: dict[str, str] = field(default_factory=dict)
    hang: float = 0.0                   # seconds to wait before answering
    drop_after_events: bool = False     # close the connection after `events`, without more
    raw: bytes | None = None            # a body sent as is (garbage, HTML), with content_type
    content_type: str = "text/html"


class VendorFake:
    """Runs in a background thread; `url` is its origin, any path is accepted."""

    def __init__(self) -> None:
        self.port = free_port()
        self.requests: list[Recorded] = []
        self._replies: list[Reply] = []
        self.default = Reply(json={"error": {"message": "no reply scripted"}}, status=500)
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def script(self, *replies: Reply) -> "VendorFake":
        """Answer the next requests with these replies, in order (then `default`)."""
        self.requests.clear()
        self._replies = list(replies)
        return self

    def last(self) -> Recorded:
        return self.requests[-1]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw
        self.requests.append(Recorded(request.method, request.path, dict(request.query),
                                      {k.lower(): v for k, v in request.headers.items()}, body))
        reply = self._replies.pop(0) if self._replies else self.default
        if reply.hang:
            await asyncio.sleep(reply.hang)
        if reply.raw is not None:
            return web.Response(body=reply.raw, status=reply.status, headers={
                "Content-Type": reply.content_type, **reply.headers})
        if reply.events is None:
            return web.json_response(reply.json, status=reply.status, headers=reply.headers)
        response = web.StreamResponse(status=reply.status, headers={
            "Content-Type": "text/event-stream", **reply.headers})
        await response.prepare(request)
        for event in reply.events:
            await response.write(event)
            await asyncio.sleep(0.01)
        if reply.drop_after_events:
            request.transport.close()
            return response
        try:
            await response.write_eof()
        except ConnectionError:
            pass  # the gateway may hang up right after [DONE]
        return response

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = self._runner = web.AppRunner(app)
        self._loop.run_until_complete(runner.setup())
        self._loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
        self._started.set()
        self._loop.run_forever()

    def start(self) -> "VendorFake":
        self._thread.start()
        self._started.wait(10)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


def sse(*payloads: Any, done: bool = True, space: bool = True) -> list[bytes]:
    prefix = b"data: " if space else b"data:"
    events = [prefix + json.dumps(p, ensure_ascii=False).encode() + b"\n\n" for p in payloads]
    if done:
        events.append(prefix + b"[DONE]\n\n")
    return events


def _chunk(model: str, content: str | None = None, finish: str | None = None,
           **extra: Any) -> dict[str, Any]:
    delta = {"content": content} if content is not None else {}
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1719546385,
            "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            **extra}


def _completion(model: str, text: str, **extra: Any) -> dict[str, Any]:
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 1719546385,
            "model": model,
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12}, **extra}


@dataclass
class VendorCase:
    """One vendor as its docs describe it (independent of modelport's vendors file)."""

    vendor: str
    official_base_url: str   # the documented base URL
    path: str                # the request path under the fake (documented path)
    model: str               # a documented model id
    auth: tuple[str, str]    # (header, value) the key travels in
    answer: dict[str, Any]
    stream: list[bytes]
    query: dict[str, str] = field(default_factory=dict)
    url_params: dict[str, str] = field(default_factory=dict)
    # The output-limit field the vendor documents (older APIs know only max_tokens).
    limit_field: str = "max_tokens"


KEY = "vendor-key-0123456789"


def _openai_like(vendor: str, base: str, path: str, model: str, **kw: Any) -> VendorCase:
    return VendorCase(vendor, base, path, model, ("authorization", f"Bearer {KEY}"),
                      kw.pop("answer", _completion(model, "Hello there")),
                      kw.pop("stream", sse(_chunk(model, "Hello"), _chunk(model, " there"),
                                           _chunk(model, finish="stop"))), **kw)


VENDORS: list[VendorCase] = [
    _openai_like("openai", "https://api.openai.com/v1", "/v1/chat/completions", "gpt-4o-mini",
                 answer=_completion("gpt-4o-mini-2024-07-18", "Hello there",
                                    system_fingerprint="fp_1"),
                 limit_field="max_completion_tokens"),
    VendorCase(
        "azure", "https://{resource}.openai.azure.com/openai/deployments/{model}",
        "/openai/deployments/my-gpt4o/chat/completions", "my-gpt4o", ("api-key", KEY),
        _completion("gpt-4o-2024-08-06", "Hello there", prompt_filter_results=[
            {"prompt_index": 0, "content_filter_results": {"hate": {"filtered": False,
                                                                    "severity": "safe"}}}]),
        # Azure's first chunk has no choices, only the prompt filter results.
        sse({"choices": [], "created": 0, "id": "", "model": "", "object": "",
             "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {}}]},
            _chunk("gpt-4o-2024-08-06", "Hello"), _chunk("gpt-4o-2024-08-06", " there"),
            _chunk("gpt-4o-2024-08-06", finish="stop")),
        query={"api-version": "2024-10-21"}, url_params={"resource": "contoso"},
        limit_field="max_completion_tokens",
    ),
    _openai_like("deepseek", "https://api.deepseek.com", "/chat/completions", "deepseek-chat",
                 answer=_completion("deepseek-chat", "Hello there", system_fingerprint="fp_3a5",
                                    usage={"prompt_tokens": 9, "completion_tokens": 3,
                                           "total_tokens": 12, "prompt_cache_hit_tokens": 0,
                                           "prompt_cache_miss_tokens": 9})),
    _openai_like("moonshot", "https://api.moonshot.cn/v1", "/v1/chat/completions",
                 "moonshot-v1-8k",
                 # Moonshot reports usage inside the last choice of the stream.
                 stream=sse(_chunk("moonshot-v1-8k", "Hello"), _chunk("moonshot-v1-8k", " there"),
                            {"id": "cmpl-1", "object": "chat.completion.chunk", "created": 1,
                             "model": "moonshot-v1-8k",
                             "choices": [{"index": 0, "delta": {}, "finish_reason": "stop",
                                          "usage": {"prompt_tokens": 9, "completion_tokens": 3,
                                                    "total_tokens": 12}}]})),
    _openai_like("zhipu", "https://open.bigmodel.cn/api/paas/v4", "/api/paas/v4/chat/completions",
                 "glm-4-flash",
                 answer=_completion("glm-4-flash", "Hello there", request_id="20240601-1")),
    _openai_like("qwen", "https://dashscope.aliyuncs.com/compatible-mode/v1",
                 "/compatible-mode/v1/chat/completions", "qwen-plus",
                 # DashScope: system_fingerprint null, a usage-only last chunk.
                 stream=sse(_chunk("qwen-plus", "Hello", usage=None, system_fingerprint=None),
                            _chunk("qwen-plus", " there", usage=None),
                            _chunk("qwen-plus", finish="stop", usage=None),
                            {"choices": [], "object": "chat.completion.chunk",
                             "usage": {"prompt_tokens": 9, "completion_tokens": 3,
                                       "total_tokens": 12},
                             "created": 1, "system_fingerprint": None, "model": "qwen-plus",
                             "id": "chatcmpl-1"})),
    _openai_like("qianfan", "https://qianfan.baidubce.com/v2", "/v2/chat/completions",
                 "ernie-4.0-8k",
                 answer={"id": "as-bcmt5ct4iy", "object": "chat.completion", "created": 1709716601,
                         "model": "ernie-4.0-8k",
                         "choices": [{"index": 0, "message": {"role": "assistant",
                                                              "content": "Hello there"},
                                      "finish_reason": "stop", "flag": 0}],
                         "usage": {"prompt_tokens": 9, "completion_tokens": 3,
                                   "total_tokens": 12}}),
    _openai_like("minimax", "https://api.minimaxi.com/v1", "/v1/chat/completions", "MiniMax-M2",
                 answer=_completion("MiniMax-M2", "Hello there", input_sensitive=False,
                                    output_sensitive=False,
                                    base_resp={"status_code": 0, "status_msg": ""}),
                 limit_field="max_completion_tokens"),
    _openai_like("baichuan", "https://api.baichuan-ai.com/v1", "/v1/chat/completions",
                 "Baichuan4"),
    _openai_like("ark", "https://ark.cn-beijing.volces.com/api/v3", "/api/v3/chat/completions",
                 "ep-20240607092512-c5wnh"),
    _openai_like("spark", "https://spark-api-open.xf-yun.com/v1", "/v1/chat/completions",
                 "generalv3.5",
                 answer={"code": 0, "message": "Success", "sid": "cha000b0003@dx1905cd86d6bb86d552",
                         "choices": [{"message": {"role": "assistant", "content": "Hello there"},
                                      "index": 0}],
                         "usage": {"prompt_tokens": 9, "completion_tokens": 3,
                                   "total_tokens": 12}},
                 stream=sse(*({"code": 0, "message": "Success", "sid": "cha000b000c@dx1905",
                               "id": "cha000b000c@dx1905", "created": 1719546385,
                               "choices": [{"delta": {"role": "assistant", "content": piece},
                                            "index": 0}]}
                              for piece in ("Hello", " there")), space=False)),
    _openai_like("siliconflow", "https://api.siliconflow.cn/v1", "/v1/chat/completions",
                 "deepseek-ai/DeepSeek-V3"),
]


class InProcessGateway:
    """The gateway app over ASGI on its own event loop (upstream sessions belong to it)."""

    def __init__(self, config: dict[str, Any]) -> None:
        from modelport.api.app import build_app
        from modelport.config import parse_config
        from modelport.gateway.build import build_state

        self.loop = asyncio.new_event_loop()
        self.state = build_state(parse_config(config))
        self.app = build_app(self.state)

    def run(self, coroutine: Any) -> Any:
        return self.loop.run_until_complete(coroutine)

    async def _request(self, method: str, path: str, **kw: Any) -> Any:
        import httpx

        transport = httpx.ASGITransport(app=self.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw",
                                     timeout=30) as client:
            return await client.request(method, path, **kw)

    def call(self, method: str, path: str, **kw: Any) -> Any:
        return self.run(self._request(method, path, **kw))

    def chat(self, model: str, content: str = "Hi", **fields: Any) -> Any:
        return self.call("POST", "/v1/chat/completions", json={
            "model": model, "messages": [{"role": "user", "content": content}], **fields})

    def stream(self, model: str, content: str = "Hi", **fields: Any) -> tuple[Any, list[Any]]:
        """(response, the `data:` payloads parsed: dicts, and "[DONE]" as a string)."""
        response = self.chat(model, content, stream=True, **fields)
        events = []
        for line in response.text.splitlines():
            if line.startswith("data:"):
                data = line[5:].strip()
                events.append(data if data == "[DONE]" else json.loads(data))
        return response, events

    def close(self) -> None:
        for provider in self.state.clients.values():
            self.run(provider.close())
        self.loop.close()


def streamed_text(events: list[Any]) -> str:
    return "".join((e["choices"][0]["delta"].get("content") or "") for e in events
                   if isinstance(e, dict) and e.get("choices"))
