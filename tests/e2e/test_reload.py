"""Configuration reload against a real server: an invalid file changes nothing and its
error names the field; a reload that adds a model, removes one and changes a third while
eight streams run on an unchanged model lets every stream finish, and the added model
answers while the removed one is a 404."""

from __future__ import annotations

import copy
import signal
import threading
import time

import httpx
import pytest
import yaml
from openai import OpenAI

from fixtures.gemma import gemma_gguf_path
from support.models import SMOLLM2
from support.server import ModelportServer, pid_alive, wait_for

MASTER = "mk-reload-test"
STEADY, CHANGING, LEAVING, ARRIVING = "steady", "changing", "leaving", "arriving"
STREAM_TOKENS = 160


def initial_config() -> dict:
    return {
        "server": {"master_key": MASTER, "drain_timeout_s": 60},
        "models": [
            {"name": STEADY, "engine": "llamacpp", "path": SMOLLM2, "context_length": 1024,
             "parallel": 8},
            {"name": CHANGING, "engine": "llamacpp", "path": SMOLLM2, "context_length": 512,
             "parallel": 1},
            {"name": LEAVING, "engine": "llamacpp", "path": SMOLLM2, "load": "on_demand",
             "context_length": 512, "parallel": 1},
        ],
    }


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    instance = ModelportServer(initial_config(), tmp_path_factory.mktemp("reload"))
    instance.start()
    yield instance
    instance.stop()


def write_config(server: ModelportServer, config: dict) -> None:
    on_disk = yaml.safe_load(server.config_path.read_text())
    config = {**config, "server": {**config["server"], "host": "127.0.0.1",
                                   "port": on_disk["server"]["port"]}}
    server.config_path.write_text(yaml.safe_dump(config))


def admin(server, method: str, path: str) -> httpx.Response:
    return httpx.request(method, server.url + "/admin" + path, timeout=120,
                         headers={"Authorization": f"Bearer {MASTER}"})


def models_state(server) -> dict[str, dict]:
    return {m["name"]: m for m in admin(server, "GET", "/models").json()["data"]}


def client(server) -> OpenAI:
    return OpenAI(base_url=server.base_url, api_key=MASTER, max_retries=0, timeout=120)


def test_an_invalid_file_changes_nothing_and_the_error_names_the_field(server):
    before = models_state(server)
    broken = copy.deepcopy(initial_config())
    broken["models"][1]["parallel"] = "lots"
    broken["models"].append({"name": "new-one", "engine": "llamacpp", "path": SMOLLM2})
    write_config(server, broken)
    try:
        reply = admin(server, "POST", "/reload")
        assert reply.status_code == 400
        error = reply.json()["error"]
        assert error["code"] == "invalid_config"
        assert f"models[1] (name '{CHANGING}').parallel" in error["message"]
        server.process.send_signal(signal.SIGHUP)  # the same refusal, in the log
        wait_for(lambda: server.log_path.read_text().count("config reload refused") >= 2, 10,
                 "logged twice")
        assert f"models[1] (name '{CHANGING}').parallel" in server.log()
        after = models_state(server)
        assert set(after) == set(before)
        assert {n: m["pid"] for n, m in after.items()} == {n: m["pid"] for n, m in before.items()}
        assert httpx.get(server.base_url + "/models/new-one", timeout=10,
                         headers={"Authorization": f"Bearer {MASTER}"}).status_code == 404
    finally:
        write_config(server, initial_config())


def test_a_reload_adds_removes_and_changes_models_while_streams_run(server):
    openai = client(server)
    assert openai.chat.completions.create(model=LEAVING, max_tokens=2, messages=[
        {"role": "user", "content": "Hi"}]).choices  # loads it, so it has a worker to stop
    before = models_state(server)
    started = threading.Barrier(10)
    outcomes: dict[int, dict] = {}

    def stream(slot: int, model: str) -> None:
        chunks, finish = 0, None
        try:
            reply = openai.chat.completions.create(
                model=model, stream=True, max_tokens=STREAM_TOKENS,
                messages=[{"role": "user", "content": "Tell me a long story."}],
                extra_body={"ignore_eos": True})
            for chunk in reply:
                if chunks == 0:
                    started.wait(60)
                chunks += 1
                if chunk.choices and chunk.choices[0].finish_reason:
                    finish = chunk.choices[0].finish_reason
            outcomes[slot] = {"chunks": chunks, "finish": finish}
        except Exception as error:  # noqa: BLE001 - reported by the assertion below
            outcomes[slot] = {"error": repr(error)}

    threads = [threading.Thread(target=stream, args=(slot, STEADY)) for slot in range(8)]
    threads.append(threading.Thread(target=stream, args=(8, LEAVING)))
    for thread in threads:
        thread.start()
    started.wait(120)  # every stream has its first chunk

    changed = copy.deepcopy(initial_config())
    changed["models"] = [
        changed["models"][0],
        {**changed["models"][1], "context_length": 1024},
        {"name": ARRIVING, "engine": "llamacpp", "path": str(gemma_gguf_path()),
         "load": "on_demand", "context_length": 1024, "parallel": 1},
    ]
    write_config(server, changed)
    reply = admin(server, "POST", "/reload")
    assert reply.status_code == 200, reply.text
    report = reply.json()
    still_running = sum(thread.is_alive() for thread in threads)
    assert report["added"] == [ARRIVING] and report["removed"] == [LEAVING]
    assert report["restarted"] == [CHANGING] and report["unchanged"] == [STEADY]

    gone = httpx.post(server.base_url + "/chat/completions", timeout=30,
                      headers={"Authorization": f"Bearer {MASTER}"},
                      json={"model": LEAVING, "messages": [{"role": "user", "content": "Hi"}]})
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "model_not_found"

    for thread in threads:
        thread.join(300)
    assert still_running == 9, "the streams should still have been running during the reload"
    for slot in range(9):
        assert outcomes[slot].get("finish") == "length", (slot, outcomes[slot])
        assert outcomes[slot]["chunks"] >= STREAM_TOKENS // 2, (slot, outcomes[slot])

    wait_for(lambda: not pid_alive(before[LEAVING]["pid"]), 30, "the removed model's worker gone")
    after = wait_for(lambda: (lambda s: s if s[CHANGING]["state"] == "ready" else None)(
        models_state(server)), 120, "the changed model ready again")
    assert set(after) == {STEADY, CHANGING, ARRIVING}
    assert after[STEADY]["pid"] == before[STEADY]["pid"] and after[STEADY]["restarts"] == 0
    assert after[CHANGING]["pid"] != before[CHANGING]["pid"]
    assert not pid_alive(before[CHANGING]["pid"])
    for model in (ARRIVING, CHANGING, STEADY):
        answer = openai.chat.completions.create(
            model=model, max_tokens=4, messages=[{"role": "user", "content": "Hi"}])
        assert answer.model == model and answer.choices[0].message.content is not None


def test_a_reload_that_changes_replicas_restarts_the_model_and_a_new_strategy_does_not(server):
    config = yaml.safe_load(server.config_path.read_text())
    changing = next(m for m in config["models"] if m["name"] == CHANGING)
    changing.update(replicas=2, strategy="round_robin")
    write_config(server, config)
    report = admin(server, "POST", "/reload").json()
    assert report["restarted"] == [CHANGING], report

    def both_ready():
        replicas = models_state(server)[CHANGING]["replicas"]
        return replicas if len(replicas) == 2 and all(
            r["state"] == "ready" for r in replicas) else None
    replicas = wait_for(both_ready, 120, "both replicas of the changed model ready")
    served_by = {httpx.post(server.base_url + "/chat/completions", timeout=60,
                            headers={"Authorization": f"Bearer {MASTER}"}, json={
                                "model": CHANGING, "max_tokens": 2,
                                "messages": [{"role": "user", "content": "Hi"}]},
                            ).headers["x-modelport-replica"] for _ in range(2)}
    assert served_by == {f"{CHANGING}#0", f"{CHANGING}#1"}  # round robin over both

    changing["strategy"] = "least_busy"  # read by the gateway only: the workers stay
    write_config(server, config)
    report = admin(server, "POST", "/reload").json()
    assert report["updated"] == [CHANGING] and report["restarted"] == [], report
    assert [r["pid"] for r in models_state(server)[CHANGING]["replicas"]] == \
        [r["pid"] for r in replicas]
