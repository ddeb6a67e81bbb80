"""The server's store settings and a model's price in the config."""

from __future__ import annotations

import pytest

from modelport.config import parse_config
from modelport.errors import ConfigError

ONLINE = {"name": "m", "engine": "openai", "base_url": "http://127.0.0.1:9/v1"}


def test_master_key_and_database_url_are_masked_in_every_repr(monkeypatch):
    monkeypatch.setenv("MP_TEST_MASTER", "mk-very-secret-value")
    config = parse_config({"server": {
        "master_key": "${MP_TEST_MASTER}",
        "database_url": "postgresql://mp:db-password@db:5432/mp"}})
    assert config.server.master_key == "mk-very-secret-value"
    for text in (repr(config), str(config.server), repr(config.server.master_key)):
        assert "mk-very-secret-value" not in text and "db-password" not in text


@pytest.mark.parametrize(("server", "words"), [
    ({"master_key": "  "}, "server.master_key: Value error, the value is empty"),
    ({"database_url": "mysql://db/x"}, "server.database_url: Value error, must be a postgresql://"),
    ({"data_dir": 5}, "server.data_dir"),
])
def test_bad_store_settings_name_the_field(server, words):
    with pytest.raises(ConfigError) as raised:
        parse_config({"server": server})
    assert words in str(raised.value)


def test_price_is_per_million_tokens_and_must_not_be_negative():
    model = parse_config({"models": [{**ONLINE, "price": {"input": 0.5, "output": 2}}]}).models[0]
    assert model.price.cost(2_000_000, 500_000) == pytest.approx(2.0)
    with pytest.raises(ConfigError, match=r"models\[0\] \(name 'm'\).price.input"):
        parse_config({"models": [{**ONLINE, "price": {"input": -1, "output": 2}}]})
    with pytest.raises(ConfigError, match="price.output: required field is missing"):
        parse_config({"models": [{**ONLINE, "price": {"input": 1}}]})
