"""Which loaded models make room for one more (routing.eviction, a pure function)."""

from modelport.routing.eviction import Resident, choose_evictions


def resident(name: str, last_used: float, size: int = 100, pinned: str = "") -> Resident:
    return Resident(name, last_used, size, pinned)


def test_nothing_is_evicted_while_there_is_room():
    plan = choose_evictions("new", 100, [resident("a", 1)], max_loaded=2, memory_budget=None)
    assert plan.names == () and plan.problem == ""


def test_the_least_recently_used_idle_model_goes_first():
    residents = [resident("recent", 30), resident("oldest", 10), resident("middle", 20)]
    plan = choose_evictions("new", 100, residents, max_loaded=3, memory_budget=None)
    assert plan.names == ("oldest",)


def test_a_model_with_requests_in_flight_or_always_loaded_is_never_evicted():
    residents = [resident("busy", 1, pinned="2 requests in flight or waiting for it"),
                 resident("pinned", 2, pinned="load: always"), resident("idle", 50)]
    plan = choose_evictions("new", 100, residents, max_loaded=3, memory_budget=None)
    assert plan.names == ("idle",)


def test_no_room_says_which_limit_and_which_models_are_busy():
    plan = choose_evictions("new", 100, [resident("busy", 1, pinned="3 requests in flight")],
                            max_loaded=1, memory_budget=None)
    assert plan.names == ()
    assert "cannot load model 'new'" in plan.problem
    assert "server.max_loaded is 1" in plan.problem and "'busy': 3 requests" in plan.problem


def test_the_memory_budget_evicts_until_the_new_model_fits():
    residents = [resident("a", 1, 400), resident("b", 2, 400), resident("c", 3, 100)]
    plan = choose_evictions("new", 500, residents, max_loaded=None, memory_budget=1000)
    assert plan.names == ("a",)  # 900 - 400 + 500 = 1000 fits
    plan = choose_evictions("new", 800, residents, max_loaded=None, memory_budget=1000)
    assert plan.names == ("a", "b")


def test_a_model_larger_than_the_whole_budget_is_refused_without_evicting():
    plan = choose_evictions("huge", 2000, [resident("a", 1)], max_loaded=None, memory_budget=1000)
    assert plan.names == () and "more than server.memory_budget" in plan.problem
