"""Forward a validated OpenAI request to its model (or a fallback) and relay the answer."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
from starlette.requests import Request
from starlette.responses import Response

from modelport.api import key_checks, queueing
from modelport.api.access_log import AccessRecord, record_of
from modelport.api.body import read_body, read_form
from modelport.api.inflight import InFlight
from modelport.api.state import GatewayState
from modelport.api.stream import ModelRenamer, RelayStreamResponse, StreamAccounting, relay_sse
from modelport.config import OpenAIUpstreamModel
from modelport.multipart import FilePart
from modelport.errors import (
    ClientDisconnectedError,
    MalformedUpstreamError,
    ModelNotReadyError,
    ModelportError,
)
from modelport.protocol import (
    AudioTranscriptionRequest,
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    OpenAIRequest,
    RerankRequest,
    parse_json_body,
    validate_request,
)
from modelport.providers.base import OpenedStream, Provider
from modelport.reranking import completed_answer
from modelport.routing import failover
from modelport.routing.deployments import Deployment, DeploymentStatus, Replica
from modelport.routing.progress import PendingAnswer, StreamProgress
from modelport.routing.registry import ModelRegistry
from modelport.admission.model_queue import Ticket, queue_ms
from modelport.providers.upstream import UpstreamReply
from modelport.workers.on_demand import ModelLoader

logger = logging.getLogger("modelport.gateway")
T = TypeVar("T")


@dataclass(frozen=True)
class Endpoint:
    path: str
    schema: type[OpenAIRequest]
    embeddings: bool = False
    form: bool = False  # a multipart/form-data body (its file parts are relayed as they came)

    def resolve(self, registry: ModelRegistry, name: str) -> Deployment:
        if self.embeddings:
            return registry.for_embeddings(name)
        if self.schema is AudioTranscriptionRequest:
            return registry.for_audio(name)
        if self.schema is CompletionRequest:
            return registry.for_completions(name)
        if self.schema is RerankRequest:
            return registry.for_rerank(name)
        return registry.for_chat(name)


CHAT = Endpoint("/chat/completions", ChatCompletionRequest)
COMPLETIONS = Endpoint("/completions", CompletionRequest)
EMBEDDINGS = Endpoint("/embeddings", EmbeddingRequest, embeddings=True)
RERANK = Endpoint("/rerank", RerankRequest)
TRANSCRIPTIONS = Endpoint("/audio/transcriptions", AudioTranscriptionRequest, form=True)


def upstream_body(deployment: Deployment, data: dict[str, Any], request: OpenAIRequest) -> dict[str, Any]:
    """The body sent upstream: the client's own fields, with only what must change changed."""
    body = dict(data)
    body["model"] = deployment.upstream_model
    if deployment.is_local and isinstance(request, ChatCompletionRequest):
        # Local engines know max_tokens; newer clients send max_completion_tokens.
        limit = request.output_limit()
        body.pop("max_completion_tokens", None)
        if limit is not None:
            body["max_tokens"] = limit
        body["messages"] = [_without_nulls(m) for m in body["messages"]]
        if body.get("tools"):
            # the same for a tool's optional `description`, `parameters` or `strict`
            body["tools"] = [{**tool, "function": _without_nulls(tool["function"])}
                             for tool in body["tools"]]
    if isinstance(request, RerankRequest):
        # Plain strings are the form every reranking server reads (llama.cpp reads no other).
        body["documents"] = request.texts()
    if getattr(request, "stream", False):
        # Usage is always asked for so every stream can be accounted; the gateway drops
        # the usage event again when the client did not ask for it.
        options = dict(body.get("stream_options") or {})
        options["include_usage"] = True
        body["stream_options"] = options
    return body


def _wants_tools(request: OpenAIRequest) -> bool:
    """Tools the model may call; with tool_choice none they are only context."""
    return bool(getattr(request, "tools", None)) and getattr(request, "tool_choice", None) != "none"


def _without_nulls(message: dict[str, Any]) -> dict[str, Any]:
    """llama.cpp fails with a 500 on an explicit null in an optional message field (`name`,
    `tool_call_id`, an assistant's `content` beside its tool calls, a tool's `description`);
    null means absent."""
    if None not in message.values():
        return message
    return {key: value for key, value in message.items() if value is not None}


async def handle(request: Request, endpoint: Endpoint) -> Response | RelayStreamResponse:
    state: GatewayState = request.app.state.gateway
    record = record_of(request.scope)
    try:
        return await _forward(request, endpoint, state, record)
    except ModelportError as error:
        note_failure(record, error)
        raise


def _max_tokens(parsed: OpenAIRequest) -> int | None:
    limit = getattr(parsed, "output_limit", None)
    return limit() if limit is not None else getattr(parsed, "max_tokens", None)


def _spent(record: AccessRecord) -> int | None:
    """The tokens the upstream says the request used (None: it did not say)."""
    if record.prompt_tokens is None and record.completion_tokens is None:
        return None
    return (record.prompt_tokens or 0) + (record.completion_tokens or 0)


def note_failure(record: AccessRecord, error: ModelportError) -> None:
    """What the log line and the metrics say about a request that failed with `error`."""
    record.error = error
    if error.status >= 500:  # why a request failed on our side belongs in its log line
        record.note = f"error={type(error).__name__}: {error.message[:200]!r}"
    elif isinstance(error, ClientDisconnectedError):
        record.note = "client_disconnected"


async def _forward(
    request: Request, endpoint: Endpoint, state: GatewayState, record: AccessRecord
) -> Response | RelayStreamResponse:
    if endpoint.form:
        data = await read_form(request, state.config.server.max_body_bytes)
        if state.log_bodies:
            logger.debug("request form %s: %r", request.url.path, data)
    else:
        body = await read_body(request, state.config.server.max_body_bytes)
        if state.log_bodies:
            logger.debug("request body %s: %s", request.url.path,
                         body[:4000].decode("utf-8", "replace"))
        data = parse_json_body(body)
    parsed = validate_request(endpoint.schema, data)
    unknown = parsed.unknown_fields()
    if unknown:
        logger.debug("accepted unknown fields %s on %s", unknown, request.url.path)
    outcome = await serve(request, endpoint, data, parsed)
    if isinstance(outcome.answer, OpenedStream):
        return _stream_response(outcome, parsed, record, state.in_flight)
    try:
        return _json_response(outcome, record)
    finally:
        outcome.release(_spent(record))


@dataclass(frozen=True)
class Outcome:
    """Who answered a request and how: an upstream reply, or a stream that has started.
    The served deployment's slot is held until the caller releases it."""

    served: Deployment
    requested: Deployment
    answer: UpstreamReply | OpenedStream
    request: OpenAIRequest
    replica: Replica
    ticket: Ticket | None = None  # its place in the requested model's queue

    def release(self, tokens: int | None = None) -> None:
        """Free its slot; `tokens` it really spent (when known) settle its key's fair share."""
        self.served.release(self.replica)
        if self.ticket is not None:
            self.requested.queue.give_back(self.ticket, tokens)

    @property
    def headers(self) -> dict[str, str]:
        headers = {"x-modelport-model": self.served.name,
                   "x-modelport-replica": self.replica.name}
        if self.served is not self.requested:
            headers["x-modelport-fallback-from"] = self.requested.name
        waited = queue_ms(self.ticket)
        if waited is not None:
            headers[queueing.QUEUE_MS_HEADER] = waited
        return headers


async def serve(request: Request, endpoint: Endpoint, data: dict[str, Any],
                parsed: OpenAIRequest) -> Outcome:
    """Resolve the request's model, plan its deployments and get an answer from the first
    that gives one (failover), unless the client leaves first."""
    state: GatewayState = request.app.state.gateway
    record = record_of(request.scope)
    record.model = parsed.model  # type: ignore[attr-defined]
    registry = state.registry
    requested = endpoint.resolve(registry, parsed.model)  # type: ignore[attr-defined]
    record.model = record.requested = requested.name
    # What a request's size counts from (its reservation, its expected cost): a form's
    # text fields, as an audio file's bytes are not tokens.
    sized = data if not endpoint.form else {
        name: value for name, value in data.items() if not isinstance(value, FilePart)}
    if record.key is not None:
        waiting = key_checks.admit(state.limiter, record, requested, sized, _max_tokens(parsed),
                                   generates=not endpoint.embeddings
                                   and not isinstance(parsed, RerankRequest))
        if waiting is not None:
            await waiting
    stream = bool(getattr(parsed, "stream", False))
    plan = registry.plan(requested, stream=stream, tools=_wants_tools(parsed),
                         vision=parsed.has_media_input(), rerank=isinstance(parsed, RerankRequest))
    if record.key is not None:
        # A fallback is still a model: one outside the key's allow-list never answers it.
        plan = key_checks.allowed_plan(record.key, plan)

    async def answer(deployment: Deployment, replica: Replica) -> UpstreamReply | OpenedStream:
        provider: Provider = replica.provider
        body = upstream_body(deployment, data, parsed)
        call = provider.open_stream if stream else provider.complete
        if not deployment.is_local:
            return await call(endpoint.path, body, parsed)
        async with PendingAnswer(replica):  # the stall watch may end the wait
            return await call(endpoint.path, body, parsed)

    ticket = queueing.ticket_for(request.headers, record.key, sized, _max_tokens(parsed))
    if not requested.queue.try_take(ticket):
        await _unless_client_leaves(request, state.in_flight, requested.queue.wait(ticket))
    try:
        status = requested.status
        if status is not DeploymentStatus.READY and (
                requested.on_demand or status is DeploymentStatus.STARTING):
            work = _load_then_serve(state.loader, requested, plan, answer, data,
                                    state.shared_routing)
        else:
            work = failover.serve(plan, answer, body=data, listener=state.shared_routing)
        served, replica, reply = await _unless_client_leaves(request, state.in_flight, work)
    except BaseException:
        requested.queue.give_back(ticket)
        raise
    record.model = served.name
    record.replica = replica.name
    return Outcome(served, requested, reply, parsed, replica, ticket)


async def _load_then_serve(loader: ModelLoader, requested: Deployment,
                           plan: tuple[Deployment, ...], answer: failover.Attempt[T],
                           body: dict[str, Any], listener: failover.RoutingListener | None,
                           ) -> tuple[Deployment, Replica, T]:
    """Load an on-demand model first (the wait ends with the client, like the answer);
    when it cannot load, its fallbacks may still answer. A model still starting is waited
    for only when no fallback could answer meanwhile."""
    try:
        await loader.ensure_loaded(requested, wait_for_start=len(plan) == 1)
    except ModelNotReadyError:
        if len(plan) == 1:
            raise
        logger.warning("model '%s' could not be loaded; trying its fallbacks", requested.name)
    return await failover.serve(plan, answer, body=body, listener=listener)


class _Waiting:
    """A request waiting for its upstream's answer, which a disconnect or a shutdown stops."""

    __slots__ = ("task", "error")

    def __init__(self, task: asyncio.Task) -> None:
        self.task = task
        self.error: ModelportError | None = None

    def stop(self, error: ModelportError) -> None:
        if self.error is None:
            self.error = error
        self.task.cancel()


async def _unless_client_leaves(request: Request, in_flight: InFlight, work: Awaitable[T]) -> T:
    """`work`'s result, unless the client disconnects first: then the work is cancelled
    (which closes the upstream connection, so the engine stops generating and the slot is
    freed) instead of running to the end for nobody."""
    loop = asyncio.get_running_loop()
    waiting = _Waiting(loop.create_task(work))  # type: ignore[arg-type]
    watcher = loop.create_task(_stop_on_disconnect(request.receive, waiting))
    in_flight.add(waiting)
    try:
        return await waiting.task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if waiting.error is None or (current is not None and current.cancelling()):
            raise  # this handler itself is being cancelled
        raise waiting.error from None
    finally:
        in_flight.discard(waiting)
        watcher.cancel()


async def _stop_on_disconnect(receive: Callable[[], Awaitable[dict]], waiting: _Waiting) -> None:
    # The body has been read, so the next message is the disconnect (or nothing at all).
    while (await receive())["type"] != "http.disconnect":
        pass
    waiting.stop(ClientDisconnectedError("the client closed the connection before the answer"))


def _stream_response(outcome: Outcome, parsed: OpenAIRequest, record: AccessRecord,
                     in_flight: InFlight) -> RelayStreamResponse:
    wants_usage = bool(getattr(parsed, "wants_usage_in_stream", lambda: False)())
    relayed = RelayedStream(outcome, record, forward_usage=wants_usage)
    response = RelayStreamResponse(relayed.events, relayed.on_close, headers=outcome.headers,
                                   in_flight=in_flight)
    if relayed.progress is not None:
        relayed.progress.stop = response.stop
    return response


class RelayedStream:
    """A started upstream stream on its way to the client: its events as relayed (checked,
    renamed, usage held back unless asked for) and what must happen when it ends."""

    def __init__(self, outcome: Outcome, record: AccessRecord, *, forward_usage: bool) -> None:
        assert isinstance(outcome.answer, OpenedStream)
        served = outcome.served
        self._outcome = outcome
        self._opened = outcome.answer
        self._record = record
        self.accounting = StreamAccounting()
        # Local workers already answer with the served name; online APIs use their own ids.
        online = isinstance(served.config, OpenAIUpstreamModel)
        # The stall watch follows the streams of local models' replicas (online models
        # have their read timeout).
        self.progress = None if online else StreamProgress()
        if self.progress is not None:
            outcome.replica.stream_started(self.progress)
        self.events = relay_sse(
            self._opened.events, forward_usage=forward_usage, accounting=self.accounting,
            label=served.name, rename=ModelRenamer(served.name) if online else None,
            validate=not served.is_local, progress=self.progress,
        )

    async def on_close(self, disconnected: bool, ended_with: ModelportError | None) -> None:
        self._opened.close()  # drops the connection, so the upstream cancels the generation
        record, accounting = self._record, self.accounting
        record.take_usage(accounting.final_usage())
        self._outcome.release(_spent(record))
        if self.progress is not None:
            self._outcome.replica.stream_ended(self.progress)
        error = ended_with or accounting.error
        if error is not None:
            record.error = error
            record.note = f"stream_error={type(error).__name__}: {error.message[:200]!r}"
        elif disconnected and not accounting.finished:
            record.note = "client_disconnected"


def _json_response(outcome: Outcome, record: AccessRecord) -> Response:
    """The upstream's answer with the served model's name."""
    reply = outcome.answer
    assert isinstance(reply, UpstreamReply)
    if isinstance(outcome.request, AudioTranscriptionRequest) and outcome.request.wants_text() \
            and reply.status == 200:
        # response_format text, srt or vtt: the transcript itself, as the upstream wrote it
        return Response(reply.body, status_code=200, media_type="text/plain; charset=utf-8",
                        headers={**outcome.headers, **reply.headers})
    payload, content = answer_payload(outcome, record)
    return Response(content, status_code=reply.status, media_type="application/json",
                    headers={**outcome.headers, **reply.headers})


def answer_payload(outcome: Outcome, record: AccessRecord) -> tuple[dict[str, Any], bytes]:
    """A non-streaming answer as a JSON object (with the served model's name) and as bytes;
    anything but a JSON object (garbage, HTML, an SSE body where JSON was asked for) is a
    502, never relayed."""
    served, reply = outcome.served, outcome.answer
    assert isinstance(reply, UpstreamReply)
    content = reply.body
    payload = reply.payload
    if payload is None:
        try:
            payload = orjson.loads(content)
        except orjson.JSONDecodeError:
            payload = None
        if not isinstance(payload, dict):
            raise MalformedUpstreamError(
                f"{served.name}: upstream answered with a body that is not a JSON object: "
                f"{content[:80].decode('utf-8', 'replace')!r}")
    if isinstance(outcome.request, RerankRequest) and reply.status == 200:
        # Each reranking engine answers in its own dialect (llama.cpp: no id, no documents).
        payload = completed_answer(served.name, payload, outcome.request)
        reply.payload = payload
    record.take_usage(payload.get("usage"))
    if payload.get("model", served.name) != served.name or reply.payload is not None:
        payload["model"] = served.name
        content = orjson.dumps(payload)
    return payload, content
