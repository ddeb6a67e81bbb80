"""The transformers engine on the worker app: one Hugging Face checkpoint behind the OpenAI
HTTP API (workers/app.py serves it).

`load()` is the registry's loader (the worker opens its port only once it returns, so
/health answering at all means loaded); `build_app()` is the app factory the tests use
in-process. Generation runs on the engine's threads; `TransformersWorker` bridges
their events onto the event loop and reads the chat prompt and tool calls, which need
the tools layer above the engines.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, AsyncIterator

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool

from modelport.config import TransformersModel
from modelport.engines.protocol import CHAT, COMPLETIONS, TOKENIZE
from modelport.engines.transformers_engine import TransformersEngine
from modelport.engines.transformers_requests import (
    Finished,
    Generation,
    GenerationEvent,
    TextDelta,
)
from modelport.engines.transformers_sampling import SamplingParams
from modelport.engines.transformers_loading import apply_visible_gpus
from modelport.errors import InvalidRequestError
from modelport.protocol import ChatCompletionRequest, CompletionRequest
from modelport.tools.calls import Content
from modelport.tools.support import ToolSupport, analyse_template
from modelport.workers.app import EngineAdapter, worker_app
from modelport.workers.chat_tools import (
    ToolPlan,
    forced_continuations,
    plan_tools,
    template_message,
)

log = logging.getLogger(__name__)


def build_app(engine: TransformersEngine) -> Starlette:
    """The worker's OpenAI app around an already loaded engine."""
    return worker_app(TransformersWorker(engine))


def load(model: TransformersModel, path: Path) -> "TransformersWorker":
    # Both must happen before torch initialises CUDA or huggingface_hub reads its
    # settings, i.e. before the engine imports them.
    apply_visible_gpus(model.gpus)
    if not model.allow_download:
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"
    started = time.monotonic()
    engine = TransformersEngine.load(model, path)
    log.info("model '%s' loaded from %s in %.1fs", model.name, path, time.monotonic() - started)
    return TransformersWorker(engine)


class TransformersWorker(EngineAdapter):
    """The engine protocol over TransformersEngine: chat (tools included), completions and
    /tokenize."""

    capabilities = frozenset({CHAT, COMPLETIONS, TOKENIZE})
    engine: TransformersEngine

    def __init__(self, engine: TransformersEngine) -> None:
        super().__init__(engine)
        template = getattr(engine, "template", None)
        self.tool_support = (analyse_template(template) if template
                             else ToolSupport(None, "it has no chat template"))

    async def stop(self) -> None:
        await run_in_threadpool(self.engine.close)

    async def tokenize(self, request: ChatCompletionRequest) -> list[int]:
        return await self._chat_prompt_ids(request)

    async def generate(self, body: ChatCompletionRequest | CompletionRequest) -> "_Stream":
        _reject_unsupported(body)
        if isinstance(body, CompletionRequest):
            prompt_ids = await _completion_prompt_ids(self.engine, body.prompt)
            return _Stream(self.engine, prompt_ids, _sampling_params(body))
        plan = plan_tools(body, self.name, self.tool_support)
        prompt_ids = await self._chat_prompt_ids(body)
        params = _sampling_params(body)
        if plan is not None and plan.forced:
            opening, names = await run_in_threadpool(
                self.engine.continuation_ids, plan.opening, forced_continuations(plan))
            prompt_ids = prompt_ids + opening
            params = replace(params, openings=names)
        return _Stream(self.engine, prompt_ids, params, plan)

    async def _chat_prompt_ids(self, body: ChatCompletionRequest) -> list[int]:
        """The prompt a chat request is answered from (and counted as, by /tokenize)."""
        messages = [template_message(message) for message in body.messages]
        # With tool_choice none the tools are still context (as llama.cpp renders them).
        shown = body.tools if body.tools and self.tool_support.can_call_tools else None
        return await run_in_threadpool(self.engine.chat_prompt, messages, shown)


class _Stream:
    """One generation's events, carried from the engine's thread onto the event loop and,
    with a tool plan, read for tool calls."""

    def __init__(self, engine: TransformersEngine, prompt_ids: list[int],
                 params: SamplingParams, plan: ToolPlan | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[GenerationEvent] = asyncio.Queue()
        self._plan = plan
        self.generation = engine.submit(prompt_ids, params, self._put)

    def _put(self, event: GenerationEvent) -> None:
        # Runs on the generation thread; raises RuntimeError once the loop is closed,
        # which makes the engine cancel the generation.
        self._loop.call_soon_threadsafe(self._queue.put_nowait, event)

    def cancel(self) -> None:
        self.generation.cancel()

    def __aiter__(self) -> AsyncIterator[Any]:
        events = self._events()
        return events if self._plan is None else _with_tool_calls(
            events, self._plan, self.generation)

    async def _events(self) -> AsyncIterator[GenerationEvent]:
        while True:
            event = await self._queue.get()
            yield event
            if not isinstance(event, TextDelta):
                return


def _sampling_params(body: ChatCompletionRequest | CompletionRequest) -> SamplingParams:
    return SamplingParams(
        max_tokens=body.output_limit(),
        temperature=body.temperature,
        top_p=body.top_p,
        seed=body.seed,
        stop=tuple(body.stop_list()),
    )


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
