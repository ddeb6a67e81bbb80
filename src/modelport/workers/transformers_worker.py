"""The transformers worker: one Hugging Face checkpoint behind the OpenAI HTTP API.

`run()` loads the model and then serves (the port opens only once the model is ready,
so /health answering at all means loaded). `build_app()` is the app factory the tests
use in-process. Generation runs on the engine's threads; this module only bridges
their events onto the event loop and shapes them like OpenAI's responses.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable

import orjson
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from modelport.sse import DONE, SSE_HEADERS, SSE_MEDIA_TYPE, error_event, sse_event
from modelport.config import TransformersModel
from modelport.engines.transformers_engine import TransformersEngine
from modelport.engines.transformers_requests import (
    Failed,
    Finished,
    Generation,
    GenerationEvent,
    TextDelta,
)
from modelport.engines.transformers_sampling import SamplingParams
from modelport.engines.transformers_loading import apply_visible_gpus
from modelport.errors import InvalidRequestError, ModelNotFoundError, ModelportError
from modelport.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    parse_json_body,
    validate_request,
)
from modelport.tools.calls import CallArguments, CallStart, Content, ToolEvent, collect, delta_of
from modelport.tools.support import ToolSupport, analyse_template
from modelport.workers.chat_tools import (
    ToolPlan,
    forced_continuations,
    plan_tools,
    template_message,
)
from modelport.workers.worker_auth import WorkerAccess, serve_guarded

log = logging.getLogger(__name__)

Endpoint = Callable[[Request], Awaitable[Response]]


def build_app(engine: TransformersEngine) -> Starlette:
    """The worker's OpenAI app around an already loaded engine."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await run_in_threadpool(engine.close)

    app = Starlette(
        routes=[
            Route("/health", _health, methods=["GET"]),
            Route("/v1/models", _openai_errors(_list_models), methods=["GET"]),
            Route("/v1/chat/completions", _openai_errors(_chat_completions), methods=["POST"]),
            Route("/v1/completions", _openai_errors(_completions), methods=["POST"]),
            Route("/tokenize", _openai_errors(_tokenize), methods=["POST"]),
        ],
        exception_handlers={404: _not_found, 405: _method_not_allowed},
        lifespan=lifespan,
    )
    app.state.engine = engine
    template = getattr(engine, "template", None)
    app.state.tool_support = (analyse_template(template) if template
                              else ToolSupport(None, "it has no chat template"))
    return app


def run(model: TransformersModel, path: Path, host: str, port: int,
        access: WorkerAccess) -> None:
    """Load `model` from `path`, then serve it on host:port until interrupted (blocking)."""
    # Both must happen before torch initialises CUDA or huggingface_hub reads its
    # settings, i.e. before the engine imports them.
    apply_visible_gpus(model.gpus)
    if not model.allow_download:
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"
    started = time.monotonic()
    engine = TransformersEngine.load(model, path)
    log.info("model '%s' loaded from %s in %.1fs", model.name, path, time.monotonic() - started)
    serve_guarded(build_app(engine), access, host, port, timeout_graceful_shutdown=5)


# -- plumbing -----------------------------------------------------------------------


def _json(
    payload: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(
        orjson.dumps(payload), status_code=status, headers=headers, media_type="application/json"
    )


def _error_response(error: ModelportError) -> Response:
    return _json(error.envelope(), error.status, error.headers)


def _openai_errors(endpoint: Endpoint) -> Endpoint:
    """Every failure leaves as an OpenAI error envelope, never as Starlette's plain 500."""

    async def wrapped(request: Request) -> Response:
        try:
            return await endpoint(request)
        except ModelportError as error:
            return _error_response(error)
        except Exception as error:
            log.exception("unexpected error in %s", request.url.path)
            return _error_response(
                ModelportError(f"internal error in the transformers worker: {error}")
            )

    return wrapped


def _engine(request: Request) -> TransformersEngine:
    return request.app.state.engine


class _EventChannel:
    """Carries a generation's events from its thread onto the event loop."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[GenerationEvent] = asyncio.Queue()

    def __call__(self, event: GenerationEvent) -> None:
        # Runs on the generation thread; raises RuntimeError once the loop is closed,
        # which makes the engine cancel the generation.
        self._loop.call_soon_threadsafe(self._queue.put_nowait, event)

    async def events(
        self, request: Request, generation: Generation
    ) -> AsyncIterator[GenerationEvent]:
        """Events until the generation ends; a client disconnect cancels it."""
        watcher = asyncio.create_task(_cancel_on_disconnect(request, generation))
        try:
            while True:
                event = await self._queue.get()
                yield event
                if not isinstance(event, TextDelta):
                    return
        finally:
            watcher.cancel()
            generation.cancel()  # no-op when it already finished; frees the slot otherwise


async def _cancel_on_disconnect(request: Request, generation: Generation) -> None:
    # The body has been read, so the next message the server sends is the disconnect.
    while (await request.receive())["type"] != "http.disconnect":
        pass
    log.info("client disconnected; cancelling generation %s", generation.id)
    generation.cancel()


def _submit(
    request: Request, prompt_ids: list[int], params: SamplingParams
) -> tuple[Generation, _EventChannel]:
    channel = _EventChannel()
    generation = _engine(request).submit(prompt_ids, params, channel)
    return generation, channel


def _sampling_params(body: ChatCompletionRequest | CompletionRequest) -> SamplingParams:
    return SamplingParams(
        max_tokens=body.output_limit(),
        temperature=body.temperature,
        top_p=body.top_p,
        seed=body.seed,
        stop=tuple(body.stop_list()),
    )


def _usage(finished: Finished) -> dict[str, int]:
    return {
        "prompt_tokens": finished.prompt_tokens,
        "completion_tokens": finished.completion_tokens,
        "total_tokens": finished.prompt_tokens + finished.completion_tokens,
    }


def _reject_unsupported(body: ChatCompletionRequest | CompletionRequest) -> None:
    if body.n is not None and body.n > 1:
        raise InvalidRequestError(
            "n > 1 is not supported by the transformers worker; send n: 1", param="n"
        )
    if isinstance(body, ChatCompletionRequest):
        if body.response_format is not None and body.response_format.type != "text":
            raise InvalidRequestError(
                f"response_format '{body.response_format.type}' is not supported by the "
                "transformers worker (it cannot constrain output)",
                param="response_format",
            )
        if body.logprobs:
            raise InvalidRequestError(
                "logprobs are not supported by the transformers worker", param="logprobs"
            )
        _reject_non_text_parts(body)
    else:
        for name in ("echo", "suffix", "logprobs"):
            if getattr(body, name):
                raise InvalidRequestError(
                    f"{name} is not supported by the transformers worker", param=name
                )


def _reject_non_text_parts(body: ChatCompletionRequest) -> None:
    # The prompt is rendered from text alone: an image (or audio, file) part would be
    # dropped without a word, and the model would answer as if it had seen it.
    for i, message in enumerate(body.messages):
        if not isinstance(message.content, list):
            continue
        for j, part in enumerate(message.content):
            if part["type"] != "text":
                raise InvalidRequestError(
                    f"model '{body.model}' takes text only: the transformers worker cannot "
                    f"read '{part['type']}' content parts", param=f"messages[{i}].content[{j}]",
                    code="unsupported_content",
                )


# -- routes ---------------------------------------------------------------------------


async def _not_found(request: Request, exc: Exception) -> Response:
    return _error_response(ModelNotFoundError(f"no route {request.url.path}", code="not_found"))


async def _method_not_allowed(request: Request, exc: Exception) -> Response:
    error = InvalidRequestError(f"{request.method} is not allowed on {request.url.path}")
    return _json(error.envelope(), 405)


async def _health(request: Request) -> Response:
    return _json({"status": "ok"})


async def _list_models(request: Request) -> Response:
    return _json(
        {
            "object": "list",
            "data": [
                {
                    "id": _engine(request).name,
                    "object": "model",
                    "created": 0,
                    "owned_by": "modelport",
                }
            ],
        }
    )


async def _chat_prompt_ids(request: Request, engine: TransformersEngine,
                           body: ChatCompletionRequest) -> list[int]:
    """The prompt a chat request is answered from (and counted as, by /tokenize)."""
    support = request.app.state.tool_support
    messages = [template_message(message) for message in body.messages]
    # With tool_choice none the tools are still context (as llama.cpp renders them).
    shown = body.tools if body.tools and support.can_call_tools else None
    return await run_in_threadpool(engine.chat_prompt, messages, shown)


async def _chat_completions(request: Request) -> Response:
    body = validate_request(ChatCompletionRequest, parse_json_body(await request.body()))
    _reject_unsupported(body)
    engine = _engine(request)
    support = request.app.state.tool_support
    plan = plan_tools(body, engine.name, support)
    prompt_ids = await _chat_prompt_ids(request, engine, body)
    params = _sampling_params(body)
    if plan is not None and plan.forced:
        opening, names = await run_in_threadpool(
            engine.continuation_ids, plan.opening, forced_continuations(plan))
        prompt_ids = prompt_ids + opening
        params = replace(params, openings=names)
    generation, channel = _submit(request, prompt_ids, params)
    events = channel.events(request, generation)
    if plan is not None:
        events = _with_tool_calls(events, plan, generation)
    shape = _ResponseShape("chatcmpl", "chat.completion", engine.name)
    if body.stream:
        stream = _chat_stream(shape, events, body.wants_usage_in_stream())
        return StreamingResponse(stream, media_type=SSE_MEDIA_TYPE, headers=SSE_HEADERS)
    pieces, finished = await _collect_events(events)
    text, calls = collect(pieces)
    message: dict[str, Any] = {"role": "assistant", "content": text if text or not calls
                               else None, "refusal": None}
    if calls:
        message["tool_calls"] = calls
    choice = {"index": 0, "message": message, "logprobs": None,
              "finish_reason": finished.finish_reason}
    return _json(shape.body(choices=[choice], usage=_usage(finished)))


async def _with_tool_calls(events: AsyncIterator[GenerationEvent], plan: ToolPlan,
                           generation: Generation) -> AsyncIterator[Any]:
    """The generation's events with its text read for tool calls: content comes out as
    TextDelta, calls as CallStart/CallArguments, and "stop" becomes "tool_calls"."""
    parser = plan.parser()
    async with contextlib.aclosing(events):
        async for event in events:
            if isinstance(event, TextDelta):
                for found in parser.push(event.text):
                    yield TextDelta(found.text) if isinstance(found, Content) else found
                if plan.one_call and parser.call_complete:
                    generation.end()  # a forced call, or parallel_tool_calls: false
                continue
            if isinstance(event, Finished) and event.finish_reason != "cancelled":
                for found in parser.finish():
                    yield TextDelta(found.text) if isinstance(found, Content) else found
                if parser.calls and event.finish_reason == "stop":
                    event = replace(event, finish_reason="tool_calls")
            yield event


async def _completions(request: Request) -> Response:
    body = validate_request(CompletionRequest, parse_json_body(await request.body()))
    _reject_unsupported(body)
    engine = _engine(request)
    prompt_ids = await _completion_prompt_ids(engine, body.prompt)
    generation, channel = _submit(request, prompt_ids, _sampling_params(body))
    shape = _ResponseShape("cmpl", "text_completion", engine.name)
    if body.stream:
        stream = _completion_stream(
            shape, channel.events(request, generation), body.wants_usage_in_stream()
        )
        return StreamingResponse(stream, media_type=SSE_MEDIA_TYPE, headers=SSE_HEADERS)
    text, finished = await _collect(channel.events(request, generation))
    choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finished.finish_reason}
    return _json(shape.body(choices=[choice], usage=_usage(finished)))


async def _tokenize(request: Request) -> Response:
    """vLLM's chat form of /tokenize: the tokens a chat request's prompt would be."""
    data = parse_json_body(await request.body())
    engine = _engine(request)
    body = validate_request(ChatCompletionRequest, {**data, "model": engine.name})
    tokens = await _chat_prompt_ids(request, engine, body)
    return _json({"count": len(tokens), "tokens": tokens})


async def _completion_prompt_ids(engine: TransformersEngine, prompt: Any) -> list[int]:
    if isinstance(prompt, str):
        return await run_in_threadpool(engine.text_prompt, prompt)
    if all(isinstance(item, int) for item in prompt):
        return list(prompt)  # already token ids
    if len(prompt) == 1:
        return await _completion_prompt_ids(engine, prompt[0])
    raise InvalidRequestError(
        "the transformers worker takes one prompt per request; send several requests",
        param="prompt",
    )


# -- response shapes -------------------------------------------------------------------


class _ResponseShape:
    """The id/object/created/model envelope shared by a response and all its chunks."""

    def __init__(self, id_prefix: str, object_name: str, model: str):
        self.id = f"{id_prefix}-{uuid.uuid4().hex}"
        self.object = object_name
        self.created = int(time.time())
        self.model = model

    def body(self, **fields: Any) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": self.object,
            "created": self.created,
            "model": self.model,
            "system_fingerprint": None,
            **fields,
        }

    def chunk(self, choices: list[dict[str, Any]], include_usage: bool, usage: Any = None) -> bytes:
        payload = self.body(choices=choices)
        if self.object == "chat.completion":
            payload["object"] = "chat.completion.chunk"
        if include_usage:
            payload["usage"] = usage  # OpenAI sends null on every chunk but the last
        return sse_event(payload)


async def _collect(events: AsyncIterator[GenerationEvent]) -> tuple[str, Finished]:
    pieces, finished = await _collect_events(events)
    return "".join(piece.text for piece in pieces if isinstance(piece, Content)), finished


async def _collect_events(events: AsyncIterator[Any]) -> tuple[list[ToolEvent], Finished]:
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


def _chat_stream(
    shape: _ResponseShape, events: AsyncIterator[GenerationEvent], include_usage: bool
) -> AsyncIterator[bytes]:
    def choice(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}

    return _stream_events(
        shape,
        events,
        include_usage,
        opening=[choice({"role": "assistant", "content": ""})],
        on_text=lambda text: choice({"content": text}),
        on_finish=lambda reason: choice({}, reason),
        on_tool_call=lambda event: choice({"tool_calls": [delta_of(event)]}),
    )


def _completion_stream(
    shape: _ResponseShape, events: AsyncIterator[GenerationEvent], include_usage: bool
) -> AsyncIterator[bytes]:
    def choice(text: str, finish_reason: str | None = None) -> dict[str, Any]:
        return {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}

    return _stream_events(
        shape,
        events,
        include_usage,
        opening=None,
        on_text=choice,
        on_finish=lambda reason: choice("", reason),
    )


async def _stream_events(
    shape: _ResponseShape,
    events: AsyncIterator[GenerationEvent],
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
        yield error_event(ModelportError(f"internal error in the transformers worker: {error}"))
    yield DONE
