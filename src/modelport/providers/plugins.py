"""Loading provider plugins, and running them so that a broken one cannot break the gateway.

Whatever a plugin raises or returns, the client gets an OpenAI answer or a clean 502
naming the plugin; its traceback goes to the log with upstream keys masked.
"""

from __future__ import annotations

import importlib
import logging
import traceback
from collections.abc import AsyncIterator
from importlib.metadata import entry_points
from typing import Any, Union

import orjson

from modelport.config import PluginModel
from modelport.errors import ConfigError, InvalidRequestError, ModelportError
from modelport.protocol import ChatCompletionRequest, EmbeddingRequest, OpenAIRequest
from modelport.providers.base import OpenedStream, primed
from modelport.errors import ProviderFault
from modelport.openai_shapes import (
    ChunkWriter,
    chat_completion,
    completion_id,
    embeddings_response,
    usage_dict,
)
from modelport.providers.plugin_api import (
    ChatResult,
    ProviderReportedError,
    ProviderSettings,
    ToolCallResult,
    Usage,
)
from modelport.providers.upstream import redact
from modelport.providers.capabilities import Capabilities
from modelport.tools.calls import call_id
from modelport.providers.upstream import UpstreamReply

ENTRY_POINT_GROUP = "modelport.providers"
Piece = Union[str, Usage, ToolCallResult]
logger = logging.getLogger("modelport.providers")


def load_provider_class(reference: str) -> type:
    """'package.module:ClassName', or the name of a `modelport.providers` entry point."""
    if ":" in reference:
        module_name, _, attribute = reference.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as error:
            raise ConfigError(f"provider '{reference}': cannot import {module_name} ({error}); "
                              "is the plugin package installed?") from None
        cls = getattr(module, attribute, None)
        if cls is None:
            raise ConfigError(f"provider '{reference}': {module_name} has no {attribute}")
        return cls
    found = entry_points(group=ENTRY_POINT_GROUP, name=reference)
    if not found:
        names = sorted(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))
        raise ConfigError(
            f"provider '{reference}' is neither 'package.module:ClassName' nor an installed "
            f"'{ENTRY_POINT_GROUP}' entry point (installed: {', '.join(names) or 'none'})")
    try:
        return next(iter(found)).load()
    except Exception as error:  # a plugin's import-time failure, reported at start-up
        raise ConfigError(f"provider '{reference}' failed to load: "
                          f"{type(error).__name__}: {error}") from None


def settings_for(model: PluginModel) -> ProviderSettings:
    return ProviderSettings(
        model=model.name, upstream_model=model.upstream_model or model.name,
        api_key=model.api_key_value, base_url=model.base_url, proxy=model.proxy,
        connect_timeout=model.connect_timeout, read_timeout=model.read_timeout,
        options=dict(model.options),
    )


def build_plugin_provider(model: PluginModel) -> "PluginProvider":
    cls = load_provider_class(model.provider)
    settings = settings_for(model)
    secrets = tuple(s for s in (settings.api_key,) if s)
    try:
        plugin = cls(settings)
    except Exception as error:
        raise ConfigError(redact(f"provider '{model.provider}' of model '{model.name}' failed "
                                 f"to start: {type(error).__name__}: {error}", secrets)) from None
    if not callable(getattr(plugin, "chat", None)):
        raise ConfigError(f"provider '{model.provider}' has no `async def chat(self, request)`")
    return PluginProvider(plugin, model.provider, model.name, secrets)


class PluginProvider:
    def __init__(self, plugin: Any, reference: str, served_name: str,
                 secrets: tuple[str, ...] = ()) -> None:
        self.plugin = plugin
        self.reference = reference
        self._name = served_name
        self._secrets = secrets
        kind = type(plugin)
        self._streams = callable(getattr(kind, "stream_chat", None))
        tools = bool(getattr(kind, "supports_tools", False))
        self.capabilities = Capabilities(
            chat=True, completions=False, embeddings=callable(getattr(kind, "embed", None)),
            streaming=True, tools=tools,
            tools_note="" if tools else f"its provider '{reference}' does not declare "
                                        "supports_tools",
            # Plugins are handed the messages' text only; an image would be dropped silently.
            vision=bool(getattr(kind, "supports_vision", False)))

    # -- failures -------------------------------------------------------------------
    def _fault(self, error: BaseException) -> ModelportError:
        """What the client sees when the plugin fails; the log gets the traceback."""
        if isinstance(error, ProviderReportedError):
            return ProviderFault(self._redact(
                f"provider '{self.reference}' (model '{self._name}') reported an error: "
                f"{error.text}"), code=str(error.code))
        if isinstance(error, ModelportError):
            error.message = self._redact(error.message)  # the plugin chose its status
            error.args = (error.message,)
            return error
        logger.error("provider '%s' (model '%s') failed:\n%s", self.reference, self._name,
                     self._redact("".join(traceback.format_exception(error))))
        return ProviderFault(self._redact(
            f"provider '{self.reference}' (model '{self._name}') failed: "
            f"{type(error).__name__}: {error}"))

    def _garbage(self, what: Any, expected: str) -> ProviderFault:
        return ProviderFault(f"provider '{self.reference}' (model '{self._name}') returned "
                             f"{type(what).__name__}, expected {expected}")

    def _redact(self, text: str) -> str:
        return redact(text, self._secrets) if self._secrets else text

    # -- chat -----------------------------------------------------------------------
    async def _chat(self, request: ChatCompletionRequest) -> ChatResult:
        try:
            result = await self.plugin.chat(request)
        except Exception as error:
            raise self._fault(error) from None
        if isinstance(result, str):
            return ChatResult(result)
        if isinstance(result, ChatResult) and isinstance(result.text, str) and (
                result.usage is None or isinstance(result.usage, Usage)) and all(
                isinstance(call, ToolCallResult) for call in result.tool_calls or ()):
            return result
        raise self._garbage(result, "str or ChatResult")

    async def complete(self, path: str, body: dict[str, Any],
                       request: OpenAIRequest) -> UpstreamReply:
        if isinstance(request, EmbeddingRequest):
            answer = await self._embed(request)
        elif isinstance(request, ChatCompletionRequest):
            result = await self._chat(request)
            calls = [_openai_call(call) for call in result.tool_calls or ()]
            answer = chat_completion(id=completion_id(), model=self._name,
                                     text=result.text if result.text or not calls else None,
                                     finish_reason=_finish_reason(result.finish_reason, calls),
                                     usage=_usage(result.usage), tool_calls=calls)
        else:
            raise InvalidRequestError(f"'{self._name}' serves only /v1/chat/completions")
        return UpstreamReply(200, orjson.dumps(answer), {}, payload=answer)

    async def open_stream(self, path: str, body: dict[str, Any],
                          request: OpenAIRequest) -> OpenedStream:
        if not isinstance(request, ChatCompletionRequest):
            raise InvalidRequestError(f"'{self._name}' streams only /v1/chat/completions")
        # Primed: the plugin's first piece is awaited here, so a plugin that fails at once
        # fails while retries and fallbacks can still help.
        return OpenedStream(await primed(self._events(request)), _nothing_to_close)

    async def _pieces(self, request: ChatCompletionRequest) -> AsyncIterator[Piece]:
        if not self._streams:
            result = await self._chat(request)  # no stream_chat: the whole answer at once
            yield result.text
            for call in result.tool_calls or ():
                yield call
            if result.usage is not None:
                yield result.usage
            return
        try:
            async for piece in self.plugin.stream_chat(request):
                if not isinstance(piece, (str, Usage, ToolCallResult)):
                    raise self._garbage(
                        piece, "str pieces (optionally ToolCallResult items and a Usage)")
                yield piece
        except ProviderFault:
            raise
        except Exception as error:
            raise self._fault(error) from None

    async def _events(self, request: ChatCompletionRequest) -> AsyncIterator[bytes]:
        writer = ChunkWriter(self._name)
        usage: Usage | None = None
        started = False
        calls = 0
        async for piece in self._pieces(request):
            if not started:
                started = True
                yield writer.event(writer.chunk({"role": "assistant", "content": ""}))
            if isinstance(piece, Usage):
                usage = piece
            elif isinstance(piece, ToolCallResult):
                call = _openai_call(piece)
                # OpenAI's order: the call's id and name first, then its arguments.
                yield writer.event(writer.chunk({"tool_calls": [{
                    "index": calls, "id": call["id"], "type": "function",
                    "function": {"name": call["function"]["name"], "arguments": ""}}]}))
                yield writer.event(writer.chunk({"tool_calls": [{
                    "index": calls, "function": {"arguments": call["function"]["arguments"]}}]}))
                calls += 1
            elif piece:
                yield writer.event(writer.chunk({"content": piece}))
        if not started:
            yield writer.event(writer.chunk({"role": "assistant", "content": ""}))
        yield writer.event(writer.chunk({}, "tool_calls" if calls else "stop"))
        if usage is not None:
            yield writer.event(writer.usage_chunk(_usage(usage)))  # type: ignore[arg-type]
        yield writer.done

    # -- embeddings -----------------------------------------------------------------
    async def _embed(self, request: EmbeddingRequest) -> dict[str, Any]:
        texts = request.texts()
        if texts is None:
            raise InvalidRequestError(f"'{self._name}' embeds text, not token ids",
                                      param="input")
        try:
            vectors = await self.plugin.embed(texts)
        except Exception as error:
            raise self._fault(error) from None
        if not (isinstance(vectors, list) and len(vectors) == len(texts) and all(
                isinstance(v, list) and all(isinstance(x, (int, float)) for x in v)
                for v in vectors)):
            raise self._garbage(vectors, f"{len(texts)} lists of numbers")
        return embeddings_response(self._name, vectors, request.encoding_format)

    async def close(self) -> None:
        closer = getattr(self.plugin, "close", None)
        if callable(closer):
            try:
                await closer()
            except Exception:  # shutting down: a failing close must not stop the others
                logger.exception("provider '%s' failed to close", self.reference)


def _openai_call(call: ToolCallResult) -> dict[str, Any]:
    arguments = call.arguments if isinstance(call.arguments, str) else \
        orjson.dumps(call.arguments).decode()
    return {"id": call.id or call_id(), "type": "function",
            "function": {"name": call.name, "arguments": arguments}}


def _finish_reason(reason: str, calls: list[dict[str, Any]]) -> str:
    return "tool_calls" if calls and reason == "stop" else reason


def _usage(usage: Usage | None) -> dict[str, int] | None:
    if usage is None:
        return None
    return usage_dict(int(usage.prompt_tokens), int(usage.completion_tokens))


def _nothing_to_close() -> None:
    return None
