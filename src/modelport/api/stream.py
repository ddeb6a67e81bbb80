"""Relaying an upstream SSE stream to the client as it arrives.

Bytes are forwarded event by event without re-encoding; only a usage event the client
did not ask for is held back (it is requested upstream for accounting), the model name is
rewritten when the upstream calls the model something else, and an opening chunk whose
content is null gets the "" OpenAI sends there.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import orjson

from modelport.api.inflight import InFlight
from modelport.sse import DONE, DONE_MARKERS, SSE_HEADERS, SSE_MEDIA_TYPE, error_event, sse_events
from modelport.errors import (
    MalformedUpstreamError,
    ModelportError,
    UpstreamError,
    UpstreamTimeoutError,
    unexpected_error,
)
from modelport.routing.progress import StreamProgress

logger = logging.getLogger("modelport.gateway")

_USAGE_MARKERS = (b'"choices":[]', b'"choices": []')
_END = object()  # end of an event source, in RelayStreamResponse's queue
_READY_EVENTS_MAX = 256  # read-ahead bound when the client reads slower than the upstream
class StreamAccounting:
    """What accounting needs from a stream: the usage event, if one passed by, else how
    many events were relayed (a stream the client left early has no usage event, but its
    tokens were produced and count against the key's limits)."""

    def __init__(self) -> None:
        self.usage: dict[str, int] | None = None
        self.events = 0
        self.finished = False
        self.error: ModelportError | None = None  # why the stream ended with an error event

    def final_usage(self) -> dict[str, int] | None:
        """The upstream's usage, or an estimate: one completion token per relayed event
        (what local engines send), the prompt unknown."""
        if self.usage is not None or not self.events:
            return self.usage
        return {"completion_tokens": self.events}

    def observe_usage(self, event: bytes) -> None:
        try:
            payload = orjson.loads(event[event.index(b"{"):])
        except (ValueError, orjson.JSONDecodeError):
            return
        usage = payload.get("usage") if isinstance(payload, dict) else None
        if isinstance(usage, dict):
            self.usage = usage


class ModelRenamer:
    """Sets the `model` of a stream's events to the served model's name.

    Online APIs name the model in their own way (a dated id, the base model behind an
    Azure deployment), so the value is located rather than matched. One instance per
    stream: once an event already carries the served name, the upstream is taken to use
    it throughout and `active` turns off, so such streams pay for one event only.
    """

    __slots__ = ("_value", "active")

    def __init__(self, name: str) -> None:
        self._value = orjson.dumps(name)
        self.active = True

    def __call__(self, event: bytes) -> bytes:
        key = event.find(b'"model"')
        if key < 0:
            return event
        colon = event.find(b":", key + 7)
        start = event.find(b'"', colon + 1)
        # Only a string value right after the colon (a null or missing model is left alone).
        if colon < 0 or start < 0 or event[colon + 1:start].strip():
            return event
        end = event.find(b'"', start + 1)
        if end < 0 or end == start + 1:
            return event  # an empty model (Azure's first chunk) says nothing yet
        if event[start:end + 1] == self._value:
            self.active = False
            return event
        return event[:start] + self._value + event[end + 1:]


_NULL_OPENINGS = tuple(
    (role + b"null}", role + b'""}')
    for role in (b'"delta":{"role":"assistant","content":',
                 b'"delta": {"role": "assistant", "content": ')
)


class OpeningContent:
    """Gives a stream's role-only opening chunk the `"content": ""` OpenAI sends.

    llama.cpp's server (and some online APIs) open with `"content": null`; clients written
    for the old SDK concatenate `delta.get("content", "")` and fail on None. Only the first
    chunk that carries a choice is looked at, so the rest of a stream pays nothing; a chunk
    with tool calls keeps its null, as OpenAI's does.
    """

    __slots__ = ("active",)

    def __init__(self) -> None:
        self.active = True

    def __call__(self, event: bytes) -> bytes:
        if b'"delta"' not in event and b'"text"' not in event:
            return event  # no choice yet (Azure's filter results, a usage event)
        self.active = False
        for null, empty in _NULL_OPENINGS:
            if null in event:
                return event.replace(null, empty, 1)
        return event


def checked_event(event: bytes, label: str) -> bytes:
    """`event` if it is an SSE event whose data is a JSON object, else a typed error.

    Clients parse every `data:` payload as JSON, so relaying garbage, HTML or bytes that
    are not UTF-8 breaks them mid-answer; orjson checks both the JSON and the UTF-8."""
    if event.startswith(_SIMPLE_DATA) and event.count(b"\n") == 2:
        payload = event[5:]  # the usual shape: one `data: {...}` line
    else:
        payload = event_data(event, label)
        if payload is None:
            return event  # comments and keep-alives carry no data for the client to parse
    try:
        if isinstance(orjson.loads(payload), dict):
            return event
    except orjson.JSONDecodeError:
        pass
    raise MalformedUpstreamError(
        f"{label}: upstream sent a stream event that is not JSON: {_excerpt(payload)}")


_SIMPLE_DATA = (b"data: {", b"data:{")
_NULL_DATA = b"data: null\n"
_FIELDS = (b"data", b"event", b"id", b"retry")


def event_data(event: bytes, label: str) -> bytes | None:
    """The joined `data:` lines of an event (None without any); other lines must be SSE
    fields or comments."""
    data: list[bytes] = []
    for line in event.rstrip(b"\n").split(b"\n"):
        if not line or line.startswith(b":"):
            continue
        name, colon, value = line.partition(b":")
        if not colon or name not in _FIELDS:
            raise MalformedUpstreamError(
                f"{label}: upstream sent a line that is not server-sent events: {_excerpt(line)}")
        if name == b"data":
            data.append(value[1:] if value.startswith(b" ") else value)
    return b"\n".join(data) if data else None


def _excerpt(raw: bytes) -> str:
    return repr(raw[:80].decode("utf-8", "replace"))


def stream_failure(error: BaseException, label: str) -> ModelportError:
    """Why a stream that already started failed, as the typed error its last event carries."""
    if isinstance(error, asyncio.TimeoutError):
        return UpstreamTimeoutError(f"{label}: upstream stopped sending")
    if isinstance(error, aiohttp.ClientError):
        return UpstreamError(f"{label}: upstream stream broke ({type(error).__name__})")
    return unexpected_error(error, label)


async def relay_sse(
    events: AsyncIterator[bytes],
    *,
    forward_usage: bool,
    accounting: StreamAccounting,
    label: str,
    rename: ModelRenamer | None = None,
    validate: bool = False,
    progress: StreamProgress | None = None,
) -> AsyncIterator[bytes]:
    """Forward OpenAI SSE events; a failure after the 200, whatever raised it, ends in an
    error event + [DONE]. `validate` checks each event first (upstreams we do not run).
    `progress` is marked whenever the relay starts waiting on the upstream (the stall
    watch reads it)."""
    opening = OpeningContent()
    try:
        async for event in events:
            if progress is not None:
                progress.waiting_since = 0.0  # not waiting: the event is being passed on
            if event.startswith(DONE_MARKERS):
                accounting.finished = True
                yield DONE
                return
            accounting.events += 1
            if validate:
                event = checked_event(event, label)
            elif event.startswith(_NULL_DATA):
                event = b""  # llama.cpp opens a stream of several prompts with it; clients choke
            if b'"usage"' in event and any(m in event for m in _USAGE_MARKERS):
                accounting.observe_usage(event)
                if not forward_usage:
                    event = b""
            if event:
                if opening.active:
                    event = opening(event)
                if rename is not None and rename.active:
                    event = rename(event)
                yield event
            if progress is not None:
                progress.waiting_since = time.monotonic()
    except Exception as error:  # noqa: BLE001 - every failure ends the stream the same way
        failure = stream_failure(error, label)
        if not isinstance(error, (ModelportError, asyncio.TimeoutError, aiohttp.ClientError)):
            logger.error("%s: stream failed after it started", label, exc_info=error)
    else:
        # The upstream closed without [DONE]: tell the client the answer may be cut short.
        failure = UpstreamError(f"{label}: upstream closed the stream before it finished")
    accounting.error = failure
    yield error_event(failure)
    yield DONE


def openai_stream_end(error: ModelportError) -> bytes:
    """How an OpenAI stream that cannot go on ends: an error event, then [DONE]."""
    return error_event(error) + DONE


class RelayStreamResponse:
    """An ASGI response that streams `events` and stops the upstream when the client leaves.

    The disconnect watcher runs beside the pump so a client that goes away while the
    upstream is still thinking (no bytes yet) is noticed at once, and `on_close` always
    runs, which closes the upstream connection and frees the model's slot. Whatever stops
    the pump early other than the client leaving (a shutdown past its drain period, a
    failure in the pump itself), the client still gets an error event and `[DONE]`.
    """

    def __init__(
        self,
        events: AsyncIterator[bytes],
        on_close: Callable[[bool, ModelportError | None], Awaitable[None]],
        headers: dict[str, str] | None = None,
        in_flight: InFlight | None = None,
        end_with: Callable[[ModelportError], bytes] | None = None,
    ) -> None:
        self._events = events
        self._final_bytes = end_with or openai_stream_end
        self._on_close = on_close
        self._in_flight = in_flight
        raw = {"content-type": SSE_MEDIA_TYPE, **{k.lower(): v for k, v in SSE_HEADERS.items()}}
        raw.update({k.lower(): v for k, v in (headers or {}).items()})
        self._headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in raw.items()]
        self._pump_task: asyncio.Future | None = None
        self._stopped_with: ModelportError | None = None
        self._started = False  # the 200 and headers went out
        self._ended = False  # the last body message went out

    def stop(self, error: ModelportError) -> None:
        """End the stream now with `error` (the gateway is shutting down)."""
        self._stopped_with = error
        if self._pump_task is not None:
            self._pump_task.cancel()

    async def __call__(self, scope, receive, send) -> None:  # noqa: ANN001 (ASGI)
        disconnected = False
        ended_with: ModelportError | None = None
        if self._in_flight is not None:
            self._in_flight.add(self)
        pump = self._pump_task = asyncio.ensure_future(self._pump(send))
        watcher = asyncio.ensure_future(self._watch(receive))
        try:
            done, _ = await asyncio.wait({pump, watcher}, return_when=asyncio.FIRST_COMPLETED)
            disconnected = watcher in done
            if disconnected:
                pump.cancel()
            else:
                watcher.cancel()
            await asyncio.gather(pump, watcher, return_exceptions=True)
            failure = None if pump.cancelled() else pump.exception()
            if isinstance(failure, OSError):
                disconnected = True
            elif not disconnected and not self._ended:
                ended_with = self._stopped_with or unexpected_error(
                    failure or RuntimeError("stream ended early"), "gateway")
                if failure is not None:
                    logger.error("stream relay failed", exc_info=failure)
                disconnected = not await self._end_with(send, ended_with)
        finally:
            if self._in_flight is not None:
                self._in_flight.discard(self)
            for task in (pump, watcher):
                if not task.done():
                    task.cancel()
            await self._on_close(disconnected, ended_with)

    async def _end_with(self, send, error: ModelportError) -> bool:  # noqa: ANN001
        """Finish the response with `error`; False when the client is already gone."""
        try:
            if not self._started:
                await send({"type": "http.response.start", "status": 200,
                            "headers": self._headers})
            await send({"type": "http.response.body", "body": self._final_bytes(error),
                        "more_body": False})
        except OSError:
            return False
        self._ended = True
        return True

    async def _pump(self, send) -> None:  # noqa: ANN001
        """Send events as they come, joining those that are ready together.

        A producer task drains the event source into a queue; it runs through every event
        of an upstream read before it next waits on the network, so the pump finds them all
        ready and sends them in one write instead of one write (and syscall) per event.
        Nothing is held back: an event is sent as soon as the pump is scheduled."""
        await send({"type": "http.response.start", "status": 200, "headers": self._headers})
        self._started = True
        queue: asyncio.Queue = asyncio.Queue(maxsize=_READY_EVENTS_MAX)
        producer = asyncio.ensure_future(self._produce(queue))
        try:
            finished = False
            while not finished:
                ready = [await queue.get()]
                while not queue.empty():
                    ready.append(queue.get_nowait())
                if ready[-1] is _END:
                    ready.pop()
                    finished = True
                if ready:
                    await send({"type": "http.response.body", "body": b"".join(ready),
                                "more_body": True})
            await producer  # an error of the event source surfaces here
        finally:
            producer.cancel()
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        self._ended = True

    async def _produce(self, queue: asyncio.Queue) -> None:
        try:
            async for event in self._events:
                await queue.put(event)
        finally:
            try:
                queue.put_nowait(_END)
            except asyncio.QueueFull:
                pass  # the pump is gone (cancelled); nobody waits for the end marker

    @staticmethod
    async def _watch(receive) -> None:  # noqa: ANN001
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
