"""A virtual key's class and weight in the queue: set through the admin API (checked there),
and a request never gets a class above its key's, whatever it asks."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from modelport.api.app import build_app
from modelport.api.queueing import ticket_for
from modelport.config import parse_config
from modelport.gateway.build import build_state
from modelport.admission.priority import CLASSES
from modelport.store.keys import VirtualKey

MASTER = "mk-test-master-key-0123456789"
ADMIN = {"Authorization": f"Bearer {MASTER}"}


@pytest.fixture
def gateway(tmp_path):
    config = {"server": {"database_url": f"sqlite:///{tmp_path / 'keys.db'}",
                         "master_key": MASTER},
              "models": [{"name": "m", "engine": "openai", "base_url": "http://127.0.0.1:9/v1"}]}
    with TestClient(build_app(build_state(parse_config(config)))) as client:
        yield client


def key(**metadata) -> VirtualKey:
    return VirtualKey(id="k1", name="team", models=None, rpm=None, tpm=None, max_parallel=None,
                      budget_tokens=None, budget_period="total", expires_at=None,
                      revoked=False, metadata=metadata)


def test_the_admin_api_keeps_a_keys_class_and_weight(gateway):
    created = gateway.post("/admin/keys", headers=ADMIN, json={
        "name": "people", "metadata": {"priority": "interactive", "weight": 2}})
    assert created.status_code == 201, created.text
    assert created.json()["metadata"] == {"priority": "interactive", "weight": 2}
    changed = gateway.patch(f"/admin/keys/{created.json()['id']}", headers=ADMIN,
                            json={"metadata": {"priority": "batch"}})
    assert changed.status_code == 200 and changed.json()["metadata"] == {"priority": "batch"}


@pytest.mark.parametrize("metadata, param", [
    ({"priority": "urgent"}, "metadata.priority"),
    ({"priority": 500}, "metadata.priority"),
    ({"weight": 0}, "metadata.weight"),
    ({"weight": "heavy"}, "metadata.weight"),
])
def test_the_admin_api_refuses_a_class_or_weight_it_cannot_use(gateway, metadata, param):
    answer = gateway.post("/admin/keys", headers=ADMIN, json={"name": "x", "metadata": metadata})
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["param"] == param


def test_a_request_gets_at_most_its_keys_class():
    batch_key = key(priority="batch", weight=3)
    asked_more = ticket_for({"x-modelport-priority": "interactive"}, batch_key, {}, 10)
    assert asked_more.priority == CLASSES["batch"] and asked_more.weight == 3.0
    assert asked_more.flow == "k1"
    person = key(priority="interactive")
    assert ticket_for({}, person, {}, 10).priority == CLASSES["interactive"]
    lowered = ticket_for({}, person, {"metadata": {"priority": "batch"}}, 10)
    assert lowered.priority == CLASSES["batch"]
    assert ticket_for({}, key(), {}, 10).priority == CLASSES["standard"]
    assert ticket_for({}, key(), {"metadata": {"priority": "interactive"}}, 10).priority \
        == CLASSES["standard"]


def test_the_cost_is_prompt_and_expected_output_tokens():
    body = {"messages": [{"role": "user", "content": "x" * 400}]}
    with_limit = ticket_for({}, None, body, 100)
    without = ticket_for({}, None, body, None)
    assert 200 <= with_limit.cost <= 230  # ~100 prompt tokens (bytes / 4) + 100
    assert without.cost - with_limit.cost == 156  # 256 expected when max_tokens is unset
