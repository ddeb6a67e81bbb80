"""Bodies that are not JSON go through the relay: /v1/audio/transcriptions takes the
OpenAI SDK's multipart form, relays its file as it came (the model renamed) and answers
what the upstream answered; bad forms are 400s in the OpenAI envelope."""

from __future__ import annotations

import httpx
import openai
import pytest

from support.models import SMOLLM2
from support.vendor_fakes import InProcessGateway, Reply

AUDIO = bytes(range(256)) * 40  # binary on purpose: every byte value must arrive unchanged


@pytest.fixture(scope="module")
def gateway(fake):
    gw = InProcessGateway({"models": [
        {"name": "whisper", "engine": "openai", "base_url": fake.url + "/v1",
         "upstream_model": "whisper-large-v3", "api_key": "sk-test-audio",
         "retries": {"attempts": 1}},
        {"name": "chat", "engine": "llamacpp", "path": SMOLLM2},
    ]})
    yield gw
    gw.close()


def sdk(gateway: InProcessGateway) -> openai.AsyncOpenAI:
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=gateway.app),
                               base_url="http://gw/v1")
    return openai.AsyncOpenAI(base_url="http://gw/v1", api_key="unused", http_client=client,
                              max_retries=0)


def test_the_sdk_transcribes_through_the_relay(fake, gateway):
    fake.script(Reply(json={"text": "hello there", "usage": {"type": "duration", "seconds": 2}}))
    answer = gateway.run(sdk(gateway).audio.transcriptions.create(
        model="whisper", file=("talk.wav", AUDIO, "audio/wav"), language="en",
        temperature=0.2))
    assert answer.text == "hello there"
    sent = fake.last()
    assert sent.path == "/v1/audio/transcriptions"
    assert sent.headers["content-type"].startswith("multipart/form-data; boundary=")
    assert sent.headers["authorization"] == "Bearer sk-test-audio"
    body = sent.body
    assert b'name="model"\r\n\r\nwhisper-large-v3\r\n' in body  # the upstream's own id
    assert b'name="language"\r\n\r\nen\r\n' in body
    assert b'name="temperature"\r\n\r\n0.2\r\n' in body
    assert b'filename="talk.wav"\r\nContent-Type: audio/wav\r\n\r\n' + AUDIO + b"\r\n" in body


def test_a_text_transcript_comes_back_as_text(fake, gateway):
    fake.script(Reply(raw=b"hello there\n", content_type="text/plain"))
    answer = gateway.run(sdk(gateway).audio.transcriptions.create(
        model="whisper", file=("talk.wav", AUDIO, "audio/wav"), response_format="text"))
    assert answer.strip() == "hello there"


@pytest.mark.parametrize("send, message", [
    ({"json": {"model": "whisper", "file": "x"}}, "multipart/form-data"),
    ({"data": {"model": "whisper"}, "files": {"other": ("a.txt", b"x")}}, "file"),
    ({"data": {"model": "whisper"}, "files": {"file": ("a.wav", b"")}}, "empty"),
    ({"data": {"model": "whisper", "stream": "true"}, "files": {"file": ("a.wav", b"x")}},
     "stream"),
    ({"data": {"model": "chat"}, "files": {"file": ("a.wav", b"x")}}, "does not transcribe"),
    ({"data": {"model": "nope"}, "files": {"file": ("a.wav", b"x")}}, "does not exist"),
])
def test_bad_forms_are_openai_errors(gateway, send, message):
    response = gateway.call("POST", "/v1/audio/transcriptions", **send)
    assert response.status_code in (400, 404)
    error = response.json()["error"]
    assert message in error["message"] and set(error) == {"message", "type", "param", "code"}


def test_a_form_over_the_body_limit_is_a_413(gateway):
    limit = gateway.state.config.server.max_body_bytes
    response = gateway.call("POST", "/v1/audio/transcriptions", data={"model": "whisper"},
                            files={"file": ("big.wav", b"\0" * (limit + 1))})
    assert response.status_code == 413
    assert "limit" in response.json()["error"]["message"]
