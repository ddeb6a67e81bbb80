"""The plugin API: what a user's provider class implements to answer a model.

Simplest form (any class works; subclassing ChatProvider is optional)::

    class MyProvider(ChatProvider):
        async def chat(self, request):            # the validated ChatCompletionRequest
            return "the answer"                    # or ChatResult(text, Usage(...))

To call tools, set `supports_tools = True`, read `request.tools` / `request.tool_choice`
and return `ChatResult(tool_calls=[ToolCallResult("get_weather", {"city": "Paris"})])`
(a streaming plugin yields ToolCallResult items among its pieces).

Optional methods, used when present:

    async def stream_chat(self, request):         # an async generator of str pieces,
        yield "the "; yield "answer"               # optionally a Usage at the end
    async def embed(self, texts) -> list[list[float]]
    async def close(self)                          # at gateway shutdown

Old online-API worker classes port by subclassing DoChatProvider and keeping do_chat.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

from modelport.protocol import ChatCompletionRequest


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass
class ToolCallResult:
    """A function the model calls: `arguments` as JSON text or a dict (encoded for you)."""

    name: str
    arguments: str | dict[str, Any] = "{}"
    id: str | None = None  # one is made up when not given


@dataclass
class ChatResult:
    text: str = ""
    usage: Usage | None = None
    finish_reason: str = "stop"  # becomes "tool_calls" when tool_calls are given
    tool_calls: list[ToolCallResult] = field(default_factory=list)


@dataclass(frozen=True)
class ProviderSettings:
    """What the gateway knows about the model a provider serves (from modelport.yaml)."""

    model: str                 # the name clients send
    upstream_model: str        # the vendor's model id (`upstream_model`, else `name`)
    api_key: str | None = field(default=None, repr=False)
    base_url: str | None = None
    proxy: str | None = field(default=None, repr=False)
    connect_timeout: float = 10.0
    read_timeout: float = 600.0
    options: dict[str, Any] = field(default_factory=dict)


class ChatProvider:
    """Optional base class: keeps the settings and gives `close` a default."""

    # Set True when `chat`/`stream_chat` honour `request.tools` (function calling).
    supports_tools = False
    # Set True when the plugin reads image/audio parts from `request.messages` itself.
    supports_vision = False

    def __init__(self, settings: ProviderSettings) -> None:
        self.settings = settings

    async def chat(self, request: ChatCompletionRequest) -> str | ChatResult:
        raise NotImplementedError("a provider implements `async def chat(self, request)`")

    async def close(self) -> None:
        return None


@dataclass
class ApiChatParams:
    """The old `params` of do_chat: OpenAI-style messages plus the model's settings."""

    messages: list[dict[str, Any]]
    model_name: str
    temperature: float | None = None
    max_tokens: int | None = None
    top_p: float | None = None
    stop: list[str] = field(default_factory=list)
    version: str | None = None
    api_key: str | None = field(default=None, repr=False)
    secret_key: str | None = field(default=None, repr=False)
    api_base_url: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class ProviderReportedError(Exception):
    """A do_chat answer with a non-zero error_code (becomes an OpenAI error envelope)."""

    def __init__(self, code: Any, text: str) -> None:
        super().__init__(f"error_code {code}: {text}")
        self.code = code
        self.text = text


class DoChatProvider(ChatProvider):
    """The old online-API worker contract, for porting vendor classes with few edits.

    Implement `do_chat(self, params) -> {"error_code": int, "text": str}`, or yield such
    dicts as the old streaming workers did (each `text` the answer so far, unless
    `cumulative_text = False`). It may be a plain (blocking) method: it runs in a thread,
    so `requests` and vendor SDKs can be kept. A non-zero error_code becomes an error.
    """

    cumulative_text = True

    def do_chat(self, params: ApiChatParams) -> Any:
        raise NotImplementedError("a DoChatProvider implements do_chat(self, params)")

    def validate_messages(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Hook kept from the old workers (e.g. to fold system prompts for a vendor)."""
        return messages

    def make_params(self, request: ChatCompletionRequest) -> ApiChatParams:
        options = dict(self.settings.options)
        messages = [{"role": m.role, "content": m.text()} for m in request.messages]
        return ApiChatParams(
            messages=self.validate_messages(messages), model_name=self.settings.upstream_model,
            temperature=request.temperature, max_tokens=request.output_limit(),
            top_p=request.top_p, stop=request.stop_list(), version=options.pop("version", None),
            api_key=self.settings.api_key, secret_key=options.pop("secret_key", None),
            api_base_url=self.settings.base_url, extra=options,
        )

    async def chat(self, request: ChatCompletionRequest) -> ChatResult:
        text = ""
        async for piece in self.stream_chat(request):
            text += piece
        return ChatResult(text)

    async def stream_chat(self, request: ChatCompletionRequest) -> AsyncIterator[str]:
        answers = await self._answers(self.make_params(request))
        sent = ""
        while True:
            answer = await _next_answer(answers)
            if answer is None:
                return
            if not isinstance(answer, dict) or "text" not in answer:
                raise TypeError(f"do_chat gave {type(answer).__name__}, expected a dict with "
                                "'error_code' and 'text'")
            if answer.get("error_code", 0):
                raise ProviderReportedError(answer["error_code"], str(answer.get("text", "")))
            text = str(answer["text"])
            if self.cumulative_text and text.startswith(sent):
                piece, sent = text[len(sent):], text
            else:
                piece, sent = text, sent + text
            if piece:
                yield piece

    async def _answers(self, params: ApiChatParams) -> Any:
        if inspect.iscoroutinefunction(self.do_chat):
            return iter([await self.do_chat(params)])
        result = await asyncio.to_thread(self.do_chat, params)
        if isinstance(result, dict):
            return iter([result])
        return result


async def _next_answer(answers: Iterator[Any] | AsyncIterator[Any]) -> Any:
    if hasattr(answers, "__anext__"):
        try:
            return await answers.__anext__()  # type: ignore[union-attr]
        except StopAsyncIteration:
            return None
    # A blocking generator (requests, a vendor SDK) is advanced in a thread.
    return await asyncio.to_thread(next, answers, None)
