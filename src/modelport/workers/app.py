"""The one worker app: an engine (engines/protocol.py) behind OpenAI's HTTP API.

Everything that is not the model lives here once, for every local engine: /health, the
/v1/models card, the routes the engine's capabilities name (and an OpenAI 404/405 for
the rest), the error envelope for every failure (never Starlette's plain 500), SSE
streams that end in an error event when a generation fails after its 200, and a client
disconnect that cancels the generation. Worker keys and the body limit are the guard's
(workers/worker_auth.py), which `serve` puts in front.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from modelport.engines.protocol import (
    CHAT,
    COMPLETIONS,
    EMBEDDINGS,
    RERANK,
    TOKENIZE,
    Engine,
    Failed,
    Finished,
    GenerationStream,
    TextDelta,
)
from modelport.errors import (
    MethodNotAllowedError,
    ModelportError,
    NotFoundError,
    error_http,
)
from modelport.openai_shapes import (
    ResponseShape,
    chat_message,
    embeddings_response,
    model_card,
    model_list,
    usage_dict,
)
from modelport.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    RerankRequest,
    parse_json_body,
    validate_request,
)
from modelport.reranking import rerank_answer
from modelport.sse import DONE, SSE_HEADERS, SSE_MEDIA_TYPE, error_event
from modelport.tools.calls import CallArguments, CallStart, Content, ToolEvent, collect, delta_of
from modelport.workers.worker_auth import WorkerAccess, serve_guarded

log = logging.getLogger(__name__)

Handler = Callable[[Request, Engine], Awaitable[Response]]


def worker_app(engine: Engine) -> Starlette:
    """The HTTP app around a loaded engine; the lifespan starts and stops it."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await engine.start()
        yield
        await engine.stop()

    routes = [Route("/health", _health, methods=["GET"]),
              Route("/v1/models", _route(engine, _models), methods=["GET"])]
    for capability, path, handler in _CAPABILITY_ROUTES:
        if capability in engine.capabilities:
            routes.append(Route(path, _route(engine, handler), methods=["POST"]))
    app = Starlette(routes=routes, exception_handlers={404: _not_found, 405: _not_allowed},
                    lifespan=lifespan)
    app.state.engine = engine
    return app


def serve(engine: Engine, access: WorkerAccess, host: str, port: int, **options: Any) -> None:
    """Serve `engine` on host:port behind the worker guard (blocking)."""
    serve_guarded(worker_app(engine), access, host, port, **options)


class EngineAdapter:
    """Base of an engine protocol written over an engine with its own API: the name, and
    start/stop/health passed on (an engine without start or stop needs none)."""

    capabilities: frozenset[str] = frozenset()

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.name: str = engine.name

    async def start(self) -> None:
        if hasattr(self.engine, "start"):
            await self.engine.start()

    async def stop(self) -> None:
        if hasattr(self.engine, "stop"):
            await self.engine.stop()

    def health(self) -> dict[str, Any]:
        return {"status": "ok"}


# -- the one error path ----------------------------------------------------------------


def error_response(error: ModelportError) -> Response:
    status, headers, body = error_http(error)
    return Response(body, status_code=status, headers=headers)


def _json(payload: dict[str, Any]) -> Response:
    return Response(orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY),
                    media_type="application/json")


def _route(engine: Engine, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request, engine)
        except ModelportError as error:
            return error_response(error)
        except Exception as error:  # noqa: BLE001 - a client gets an envelope, never plain text
            log.exception("unexpected error in %s", request.url.path)
            return error_response(ModelportError(
                f"internal error in model '{engine.name}': {type(error).__name__}: {error}"))

    return endpoint


async def _not_found(request: Request, exc: Exception) -> Response:
    return error_response(NotFoundError(f"no route {request.url.path}"))


async def _not_allowed(request: Request, exc: Exception) -> Response:
    return error_response(
        MethodNotAllowedError(f"{request.method} is not allowed on {request.url.path}"))


# -- routes ----------------------------------------------------------------------------


async def _health(request: Request) -> Response:
    health = request.app.state.engine.health()
    return Response(orjson.dumps(health), status_code=200 if health.get("status") == "ok"
                    else 503, media_type="application/json")


async def _models(request: Request, engine: Engine) -> Response:
    return _json(model_list([model_card(engine.name)]))


async def _body(request: Request, kind: type) -> Any:
    return validate_request(kind, parse_json_body(await request.body()))


def _chat_choice(pieces: list[ToolEvent], finished: Finished) -> dict[str, Any]:
    text, calls = collect(pieces)
    return {"index": 0, "message": chat_message(text if text or not calls else None, calls),
            "logprobs": None, "finish_reason": finished.finish_reason}


def _completion_choice(pieces: list[ToolEvent], finished: Finished) -> dict[str, Any]:
    text = "".join(piece.text for piece in pieces if isinstance(piece, Content))
    return {"index": 0, "text": text, "logprobs": None, "finish_reason": finished.finish_reason}


def _generation(kind: type, id_prefix: str, object_name: str,
                stream: Callable[[ResponseShape, AsyncIterator[Any], bool], AsyncIterator[bytes]],
                choice: Callable[[list[ToolEvent], Finished], dict[str, Any]]) -> Handler:
    """The handler of a generating route (chat or text completions): one answer, or SSE."""
    async def handler(request: Request, engine: Engine) -> Response:
        body = await _body(request, kind)
        shape = ResponseShape(id_prefix, object_name, engine.name)
        events = _until_disconnect(request, await engine.generate(body))
        if body.stream:
            return _sse(stream(shape, events, body.wants_usage_in_stream()))
        pieces, finished = await _collect(events)
        return _json(shape.body(choices=[choice(pieces, finished)], usage=_usage(finished)))

    return handler


async def _embeddings(request: Request, engine: Engine) -> Response:
    body = await _body(request, EmbeddingRequest)
    embedded = await engine.embed(body)
    tokens = embedded.prompt_tokens
    return _json(embeddings_response(engine.name, embedded.vectors, body.encoding_format,
                                     {"prompt_tokens": tokens, "total_tokens": tokens}))


async def _rerank(request: Request, engine: Engine) -> Response:
    body = await _body(request, RerankRequest)
    scored = await engine.score(body)
    return _json(rerank_answer(engine.name, list(scored.scores), body, scored.prompt_tokens))


async def _tokenize(request: Request, engine: Engine) -> Response:
    """vLLM's chat form of /tokenize: the tokens a chat request's prompt would be."""
    data = parse_json_body(await request.body())
    tokens = await engine.tokenize(validate_request(ChatCompletionRequest,
                                                    {**data, "model": engine.name}))
    return _json({"count": len(tokens), "tokens": tokens})




# -- generations: disconnects, collecting, streaming ----------------------------------


async def _until_disconnect(request: Request, stream: GenerationStream) -> AsyncIterator[Any]:
    """The stream's events until it ends; a client disconnect cancels it, and so does
    closing this iterator early (Starlette drops a stream whose client left)."""
    watcher = asyncio.create_task(_cancel_on_disconnect(request, stream))
    try:
        async for event in stream:
            yield event
            if isinstance(event, (Finished, Failed)):
                return
    finally:
        watcher.cancel()
        stream.cancel()  # a no-op when it already finished; frees the slot otherwise


async def _cancel_on_disconnect(request: Request, stream: GenerationStream) -> None:
    # The body has been read, so the next message the server sends is the disconnect.
    while (await request.receive())["type"] != "http.disconnect":
        pass
    log.info("client disconnected; cancelling its generation")
    stream.cancel()


def _usage(finished: Finished) -> dict[str, int]:
    return usage_dict(finished.prompt_tokens, finished.completion_tokens)


async def _collect(events: AsyncIterator[Any]) -> tuple[list[ToolEvent], Finished]:
    """Text pieces (as Content) and tool-call events up to the generation's end."""
    pieces: list[ToolEvent] = []
    async with contextlib.aclosing(events):  # a cancelled handler still cancels the generation
        async for event in events:
            if isinstance(event, TextDelta):
                pieces.append(Content(event.text))
            elif isinstance(event, (CallStart, CallArguments)):
                pieces.append(event)
            elif isinstance(event, Failed):
                raise event.error
            else:
                return pieces, event
    raise ModelportError("the generation ended without a result")


def _sse(stream: AsyncIterator[bytes]) -> StreamingResponse:
    return StreamingResponse(stream, media_type=SSE_MEDIA_TYPE, headers=SSE_HEADERS)


def _chat_stream(shape: ResponseShape, events: AsyncIterator[Any],
                 include_usage: bool) -> AsyncIterator[bytes]:
    def choice(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}

    return _stream_events(
        shape, events, include_usage,
        opening=[choice({"role": "assistant", "content": ""})],
        on_text=lambda text: choice({"content": text}),
        on_finish=lambda reason: choice({}, reason),
        on_tool_call=lambda event: choice({"tool_calls": [delta_of(event)]}),
    )


def _completion_stream(shape: ResponseShape, events: AsyncIterator[Any],
                       include_usage: bool) -> AsyncIterator[bytes]:
    def choice(text: str, finish_reason: str | None = None) -> dict[str, Any]:
        return {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}

    return _stream_events(shape, events, include_usage, opening=None, on_text=choice,
                          on_finish=lambda reason: choice("", reason))


async def _stream_events(
    shape: ResponseShape,
    events: AsyncIterator[Any],
    include_usage: bool,
    opening: list[dict[str, Any]] | None,
    on_text: Callable[[str], dict[str, Any]],
    on_finish: Callable[[str], dict[str, Any]],
    on_tool_call: Callable[[CallStart | CallArguments], dict[str, Any]] | None = None,
) -> AsyncIterator[bytes]:
    """SSE payloads for a generation; a failure after the 200 ends with an error event.
    The opening chunk goes out with the first result, not before: until then the request
    waits for a slot and its prompt is read, a silence the gateway's stall watch leaves
    alone only before a stream's first event."""
    try:
        # aclosing: when Starlette drops this stream (client gone), the events generator
        # is closed at once, which cancels the generation and frees its slot.
        async with contextlib.aclosing(events):
            async for event in events:
                if opening is not None:
                    yield shape.chunk(opening, include_usage)
                    opening = None
                if isinstance(event, TextDelta):
                    yield shape.chunk([on_text(event.text)], include_usage)
                elif isinstance(event, (CallStart, CallArguments)) and on_tool_call:
                    yield shape.chunk([on_tool_call(event)], include_usage)
                elif isinstance(event, Failed):
                    yield error_event(event.error)
                elif event.finish_reason == "cancelled":
                    return  # the client is gone; nobody reads the rest
                else:
                    yield shape.chunk([on_finish(event.finish_reason)], include_usage)
                    if include_usage:
                        yield shape.chunk([], include_usage, _usage(event))
    except Exception as error:
        log.exception("stream %s failed", shape.id)
        yield error_event(ModelportError(f"internal error in model '{shape.model}': {error}"))
    yield DONE


_CAPABILITY_ROUTES: list[tuple[str, str, Handler]] = [
    (CHAT, "/v1/chat/completions", _generation(
        ChatCompletionRequest, "chatcmpl", "chat.completion", _chat_stream, _chat_choice)),
    (COMPLETIONS, "/v1/completions", _generation(
        CompletionRequest, "cmpl", "text_completion", _completion_stream, _completion_choice)),
    (EMBEDDINGS, "/v1/embeddings", _embeddings),
    (RERANK, "/v1/rerank", _rerank),
    (TOKENIZE, "/tokenize", _tokenize),
]
