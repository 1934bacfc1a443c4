import os

import numpy as np
import pytest

from barrierlb import make_policy
from barrierlb.predictors import SurvivalPredictor, cost_lookahead
from barrierlb.router import DecodeRouter


def test_router_respects_slots_and_keeps_requests_in_place():
    router = DecodeRouter(3, 2, policy="bfio:horizon=4", predictor=SurvivalPredictor(min_samples=1))
    for i in range(10):
        router.add_request(i, prompt_tokens=100 * (i + 1))
    first = router.route()
    assert len(first) == 6 and router.queued == 4
    assert np.bincount(list(first.values()), minlength=3).tolist() == [2, 2, 2]
    router.step_report(finished=[0, 5])
    router.observe_output([1, 1])
    second = router.route()
    assert len(second) == 2
    for request_id, rank in first.items():
        if request_id not in (0, 5):
            assert router.rank_of(request_id) == rank          # never moved
    assert router.load().sum() > 0


def test_router_rejects_bad_input():
    with pytest.raises(ValueError, match="n_ranks"):
        DecodeRouter(0, 4)
    router = DecodeRouter(2, 2)
    with pytest.raises(ValueError, match="prompt_tokens"):
        router.add_request(1, prompt_tokens=-5)
    router.add_request(1, prompt_tokens=5)
    with pytest.raises(ValueError, match="already submitted"):
        router.add_request(1, prompt_tokens=5)
    with pytest.raises(ValueError, match="not running"):
        router.step_report(finished=[1])


def test_decide_arrays_and_cost_lookahead():
    decision = make_policy("bfio:horizon=1").decide_arrays([[5.0, 0.0], [5.0, 0.0]], [[4.0, 4.0]], [1, 1], [9])
    assert decision.task_ids.tolist() == [9] and decision.workers.tolist() == [1]
    assert cost_lookahead(lambda obj, h: 2.0, None, 2).tolist() == [2.0, 2.0, 2.0]
    with pytest.raises(ValueError, match="non-negative number or 3"):
        cost_lookahead(lambda obj, h: [1.0, -1.0, 0.0], None, 2)
    for silent in (True, "5", ["1", "2", "3"], float("nan")):      # before: True and "5" were taken as 1.0 and 5.0
        with pytest.raises(ValueError, match="non-negative number or 3"):
            cost_lookahead(lambda obj, h, v=silent: v, None, 2)


def test_llm_serving_example_runs_end_to_end():
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "examples" / "llm_serving" / "run.py"
    result = subprocess.run([sys.executable, str(script), "--workload", "synthetic", "--requests", "600",
                             "--ranks", "4", "--slots", "8"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "data_parallel_rank=" in result.stdout                 # part 1 routed requests
    from barrierlb.policies.bfio import LLM_DECODE_NO_ORACLE

    assert LLM_DECODE_NO_ORACLE in result.stdout                  # synthetic outputs, no oracle: its preset
    assert "TTFT p99" in result.stdout


def test_step_report_validates_before_advancing():
    router = DecodeRouter(2, 2, policy="jsq-tokens")
    router.add_request(1, prompt_tokens=10)
    router.route()
    before = router.load().copy()
    for bad in ([99], [1, 99], [1, 1]):
        with pytest.raises(ValueError):
            router.step_report(finished=bad)
        assert router.load().tolist() == before.tolist()            # nothing aged: a retry is safe
    router.step_report(finished=[])
    assert router.load().sum() == before.sum() + 1
    router.step_report(finished=[1])
    assert router.state.n_active == 0


def test_asynchronous_reports_progress_finish_cancel():
    from barrierlb.predictors import SurvivalPredictor

    predictor = SurvivalPredictor(min_samples=1)
    router = DecodeRouter(2, 1, policy="jsq-tokens", predictor=predictor)
    router.add_request(1, prompt_tokens=100, max_output_tokens=50)
    router.add_request(2, prompt_tokens=10)
    router.add_request(3, prompt_tokens=10)
    placed = router.route()
    assert sorted(placed) == [1, 2] and router.queued == 1 and router.is_queued(3)
    router.progress(1, 7)
    router.progress(1, 9)                                             # a total, not an increment
    assert router.load()[placed[1]] == 109
    router.cancel(3)                                                  # a queued request withdrawn
    assert router.queued == 0 and not router.is_queued(3)
    router.finish(1, output_tokens=12)
    router.route()                                                    # learned at the next decision
    assert predictor.n_observed == 1
    router.cancel(2)                                                  # a running one: slot freed, nothing learned
    assert router.state.n_active == 0 and predictor.n_observed == 1
    router.add_request(3, prompt_tokens=5)                            # a withdrawn id may come back
    assert router.route() == {3: 0}
    with pytest.raises(ValueError, match="not running"):
        router.progress(1, 3)
    with pytest.raises(ValueError, match="not running"):
        router.finish(2, 1)
    with pytest.raises(TypeError, match="tokens"):
        router.progress(3, 1.5)
    with pytest.raises(ValueError, match="tokens"):
        router.progress(3, -1)


def test_max_output_tokens_bounds_the_prediction():
    router = DecodeRouter(1, 4, policy="bfio:horizon=8")
    router.add_request(1, prompt_tokens=10, max_output_tokens=3)
    router.route()
    router.progress(1, 1)
    router.route()
    assert router.state._slot_remaining[0, 0] == 2                   # capped, though no predictor knows the length


def test_rank_down_drops_running_keeps_queued_and_rank_up_returns():
    router = DecodeRouter(2, 1, policy="round-robin")
    for i in range(4):
        router.add_request(i, prompt_tokens=10)
    placed = router.route()
    down_rank = placed[0]
    assert router.rank_down(down_rank) == [0]
    assert router.queued == 2
    router.finish(1, 1)
    second = router.route()
    assert list(second.values()) == [1 - down_rank]                   # nothing goes to the rank that is down
    router.rank_up(down_rank)
    assert list(router.route().values()) == [down_rank]
    with pytest.raises(ValueError, match="rank 5 does not exist"):
        router.rank_down(5)


def test_max_wait_s_forces_the_oldest_request():
    picked = {}
    for max_wait_s in (None, 1.0):
        now = [0.0]
        router = DecodeRouter(2, 1, policy="bfio:horizon=0,max_wait=none", max_wait_s=max_wait_s,
                              clock=lambda now=now: now[0])
        router.add_request(0, prompt_tokens=10)
        router.add_request(1, prompt_tokens=10)
        router.route()
        router.add_request(2, prompt_tokens=5000)                     # long prompt, waiting since t=0
        now[0] = 5.0
        router.add_request(3, prompt_tokens=10)
        router.finish(0, 1)
        picked[max_wait_s] = list(router.route())
    assert picked == {None: [3], 1.0: [2]}                            # balance first, unless waited too long


def _resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="reads resident memory from /proc")
def test_router_memory_is_bounded_by_live_requests_over_a_million_requests():
    """1,000,000 requests pass through the router (queued, routed, finished or cancelled, 1,000 at a
    time, ids reused after their request ended): resident memory after the last batch is within a few
    MiB of what it was after the first 50,000, where a record of every id seen would hold 60 MB or more."""
    router = DecodeRouter(8, 125, policy="fcfs")
    batch = 1_000

    def one_batch(k):
        base = (k % 500) * batch                 # ids come back once their requests have ended
        for i in range(batch):
            router.add_request(base + i, prompt_tokens=10 + i % 50, max_output_tokens=64)
        router.cancel(base)                      # one queued request withdrawn by its client
        placed = router.route()
        assert len(placed) == batch - 1
        for request_id in placed:
            router.finish(request_id, 3)

    for k in range(50):
        one_batch(k)
    settled = _resident_bytes()
    for k in range(50, 1_000):
        one_batch(k)
    grown = _resident_bytes() - settled
    assert router.queued == 0 and router.state.n_active == 0
    assert grown < 8 * 2**20, f"resident memory grew by {grown / 2**20:.1f} MiB"


def test_the_ledgers_one_task_paths_match_the_general_ones():
    from barrierlb.state import ClusterState

    one, many = ClusterState(2, 2), ClusterState(2, 2)
    for tid, work, steps in ((3, 10.0, 4.0), (5, 0.0, np.inf), (1, 7.5, 0.0)):
        one.submit_one(tid, work, growth=1.0, steps=steps, prompt=work)
        many.submit_arrays([tid], work, growth=1.0, steps=steps, prompt=work)
    assert all(np.array_equal(one._pool[k], many._pool[k]) and one._pool[k].dtype == many._pool[k].dtype
               for k in many._pool)
    for bad in ({"task_id": 3}, {"task_id": -1}, {"work": -1.0}, {"work": np.nan}, {"steps": -2.0}):
        args = {"task_id": 9, "work": 1.0, **bad}
        with pytest.raises(ValueError):
            one.submit_one(args.pop("task_id"), args.pop("work"), **args)
    from barrierlb.policies import Decision

    for state in (one, many):
        state.place(Decision(task_ids=np.array([5]), workers=np.array([1])))      # one task: the scalar path
        state.place(Decision(task_ids=np.array([3, 1]), workers=np.array([1, 0])))
        state.complete([5])
    assert np.array_equal(one.slot_ids(), many.slot_ids()) and one.slot_ids()[1].tolist() == [-1, 3]
    with pytest.raises(ValueError, match="free slots"):
        one.submit_one(8, 1.0)
        one.submit_one(9, 1.0)
        one.place(Decision(task_ids=np.array([8, 9]), workers=np.array([0, 0])))
    with pytest.raises(ValueError, match="not running"):
        one.complete([5])


def test_step_report_refuses_a_request_id_that_is_not_an_integer():
    # Before: np.asarray(..., dtype=int64) truncated 7.9 to 7 and finished request 7.
    router = DecodeRouter(2, 2, policy="fcfs")
    router.add_request(7, 100)
    router.route()
    with pytest.raises(ValueError, match="finished must hold integers, got 7.9"):
        router.step_report(finished=[7.9])
    assert router.rank_of(7) in (0, 1) and float(router.load().sum()) == 100.0     # not aged, still running


def test_a_bad_queued_at_leaves_the_router_as_it_was():
    # Before: the request entered the pool before float(queued_at) raised, so it had no
    # queueing time and every later route() with max_wait_s failed with KeyError.
    router = DecodeRouter(2, 2, policy="fcfs", max_wait_s=1.0, clock=lambda: 10.0)
    for bad, kind in (("soon", TypeError), (float("nan"), ValueError)):
        with pytest.raises(kind, match="queued_at must be"):
            router.add_request(8, 100, queued_at=bad)
        assert router.queued == 0 and not router.is_queued(8)
    router.add_request(8, 100, queued_at=9.5)
    assert router.route() == {8: 0}


def test_finish_teaches_the_predictor_the_request_prompt_with_its_output():
    predictor = SurvivalPredictor(min_samples=1, strata=2)
    router = DecodeRouter(2, 2, policy="bfio:horizon=4", predictor=predictor)
    for request_id, prompt in enumerate((10.0, 20.0, 3000.0)):
        router.add_request(request_id, prompt)
    placed = router.route()
    router.set_prompt_tokens(2, 2500.0)                 # the exact count replaces the estimate
    for request_id in placed:
        router.finish(request_id, 4 + request_id)
    router.observe_output([9], prompt_tokens=[40.0])
    assert sorted(zip(predictor._recent_prompt.tolist(), predictor._recent.tolist())) == \
        [(10.0, 4.0), (20.0, 5.0), (40.0, 9.0), (2500.0, 6.0)]
