"""The transformers worker refuses content it cannot read, before the engine sees it.

In-process over ASGI with a stand-in engine: the refusal happens before any generation,
and a worker can be run alone, so it must refuse on its own (not rely on the gateway).
"""

from __future__ import annotations

import asyncio

import httpx
import pytest

from modelport.workers.transformers_worker import build_app


class RecordingEngine:
    """Stands in for the engine; records every prompt it is asked to render."""

    name = "smollm2-hf"

    def __init__(self) -> None:
        self.prompts: list = []

    def chat_prompt(self, messages):
        self.prompts.append(messages)
        raise RuntimeError("this test expects no prompt to be rendered")

    def close(self) -> None:
        pass


def post_chat(engine, body):
    async def go():
        transport = httpx.ASGITransport(app=build_app(engine))
        async with httpx.AsyncClient(transport=transport, base_url="http://worker") as client:
            return await client.post("/v1/chat/completions", json=body)

    return asyncio.run(go())


@pytest.mark.parametrize("part", [
    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
    {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
])
def test_non_text_parts_are_400_not_silently_dropped(part):
    engine = RecordingEngine()
    response = post_chat(engine, {"model": "smollm2-hf", "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "what is this?"}, part]}]})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == "messages[1].content[1]"
    assert f"'{part['type']}'" in error["message"] and "smollm2-hf" in error["message"]
    assert engine.prompts == []


def test_malformed_part_is_400_naming_the_field():
    response = post_chat(RecordingEngine(), {"model": "smollm2-hf", "messages": [
        {"role": "user", "content": [{"type": "text"}]}]})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "messages[0].content[0].text"
