"""Which loaded models make room for one more (routing.eviction, pure functions): least
recent use weighted by reload cost, per-device budgets, and models with requests only
when the caller allows it."""

from modelport.routing.eviction import Resident, choose_evictions, eviction_order

NOW = 1000.0


def resident(name: str, idle_s: float, size: int = 100, pinned: str = "", busy: int = 0,
             reload_s: float = 1.0, device: str = "cpu") -> Resident:
    return Resident(name, NOW - idle_s, {device: size}, pinned, busy, reload_s)


def choose(needs, residents, max_loaded=None, budgets=None, evict_busy=False):
    if isinstance(needs, int):
        needs = {"cpu": needs}
    return choose_evictions("new", needs, residents, max_loaded, budgets, NOW, evict_busy)


def test_nothing_is_evicted_while_there_is_room():
    plan = choose(100, [resident("a", 1)], max_loaded=2)
    assert plan.names == () and plan.problem == ""


def test_with_equal_reload_costs_the_least_recently_used_idle_model_goes_first():
    residents = [resident("recent", 10), resident("oldest", 30), resident("middle", 20)]
    assert choose(100, residents, max_loaded=3).names == ("oldest",)


def test_of_two_models_of_similar_age_the_cheaper_to_reload_goes_first():
    cheap, dear = resident("cheap", 10, reload_s=1), resident("dear", 11, reload_s=5)
    assert choose(100, [dear, cheap], max_loaded=2).names == ("cheap",)
    assert [r.name for r in eviction_order([dear, cheap], NOW)] == ["cheap", "dear"]


def test_a_dear_model_idle_far_longer_still_goes_before_a_cheap_recent_one():
    old_dear, recent_cheap = resident("old", 100, reload_s=5), resident("recent", 10, reload_s=1)
    assert choose(100, [recent_cheap, old_dear], max_loaded=2).names == ("old",)


def test_two_models_just_used_are_ordered_by_reload_cost():
    residents = [resident("dear", 0, reload_s=3), resident("cheap", 0, reload_s=0.5)]
    assert [r.name for r in eviction_order(residents, NOW)] == ["cheap", "dear"]


def test_a_pinned_or_always_loaded_model_is_never_evicted():
    residents = [resident("pinned", 90, pinned="pin: true"),
                 resident("always", 80, pinned="load: always"), resident("idle", 1)]
    assert choose(100, residents, max_loaded=3).names == ("idle",)
    assert choose(100, residents[:2], max_loaded=2, evict_busy=True).problem


def test_a_busy_model_goes_only_when_allowed_and_after_every_idle_one():
    busy, idle = resident("busy", 50, busy=3), resident("idle", 1)
    refused = choose(100, [busy], max_loaded=1)
    assert refused.names == () and refused.busy_would_fit
    assert "cannot load model 'new'" in refused.problem
    assert "server.max_loaded is 1" in refused.problem and "'busy': 3 requests" in refused.problem
    assert choose(100, [busy], max_loaded=1, evict_busy=True).names == ("busy",)
    # The idle one goes first even though the busy one was used longer ago.
    assert choose(100, [busy, idle], max_loaded=2, evict_busy=True).names == ("idle",)
    assert choose(100, [busy, idle], max_loaded=1, evict_busy=True).names == ("idle", "busy")


def test_a_busy_model_that_would_not_make_room_anyway_is_no_reason_to_wait():
    plan = choose(900, [resident("pinned", 1, 500, pinned="pin: true"),
                        resident("busy", 1, 100, busy=1)], budgets={"cpu": 1000})
    assert plan.problem and not plan.busy_would_fit


def test_the_memory_budget_evicts_until_the_new_model_fits():
    residents = [resident("a", 3, 400), resident("b", 2, 400), resident("c", 1, 100)]
    assert choose(500, residents, budgets={"cpu": 1000}).names == ("a",)  # 900-400+500
    assert choose(800, residents, budgets={"cpu": 1000}).names == ("a", "b")


def test_a_model_larger_than_its_devices_whole_budget_is_refused_without_evicting():
    plan = choose(2000, [resident("a", 1)], budgets={"cpu": 1000})
    assert plan.names == () and "more than server.memory_budget there" in plan.problem
    assert "on cpu" in plan.problem


def test_each_device_has_its_own_budget_and_only_models_there_make_room():
    residents = [resident("gpu-old", 90, 600, device="cuda:0"),
                 resident("cpu-a", 20, 600), resident("cpu-b", 10, 300)]
    budgets = {"cpu": 1000, "cuda:0": 1000}
    # Room is short on the CPU only: the GPU model, though the oldest, stays.
    assert choose({"cpu": 500}, residents, budgets=budgets).names == ("cpu-a",)
    assert choose({"cuda:0": 500}, residents, budgets=budgets).names == ("gpu-old",)
    # A device without a budget is not bounded.
    assert choose({"cuda:1": 10**12}, residents, budgets=budgets).names == ()


def test_a_model_on_two_devices_needs_room_on_both():
    residents = [resident("a", 30, 800, device="cuda:0"), resident("b", 20, 800, device="cuda:1")]
    budgets = {"cuda:0": 1000, "cuda:1": 1000}
    plan = choose({"cuda:0": 500, "cuda:1": 500}, residents, budgets=budgets)
    assert sorted(plan.names) == ["a", "b"]
    message = choose({"cuda:0": 500, "cuda:1": 500},
                     [resident("a", 3, 800, pinned="pin: true", device="cuda:0")],
                     budgets=budgets).problem
    assert "on cuda:0" in message and "'a': pin: true" in message
