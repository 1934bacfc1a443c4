"""Plain ``bfio``'s online controller (issue 15.1): what it learns, what it sets, what it leaves alone."""

import numpy as np
import pytest

from barrierlb import make_policy
from barrierlb.policies.bfio import FIXED_DEFAULTS, H0_DEFAULTS, TUNED_OPTIONS, OnlineTuning
from barrierlb.predictors import LifetimeObserver, OraclePredictor
from barrierlb.simulator import SimulationConfig, Simulator
from barrierlb.workloads import Workload, synthetic


def test_observer_learns_lifetimes_from_slots_and_censors_running_tasks():
    obs = LifetimeObserver(span=10_000)
    ids, age = np.arange(8).reshape(2, 4), np.zeros((2, 4), dtype=np.int64)
    for step in range(1, 60):
        age += 1
        obs.observe(ids, age)
        if step % 10 == 0:                     # slot (0, 0) gets a new task every 10 steps
            ids, age = ids.copy(), age.copy()
            ids[0, 0] += 100
            age[0, 0] = 0
    # Seen at age 10, gone one step later: 11 steps.
    assert obs.n_finished == 5 and obs.lifetimes().tolist() == [11.0] * 5 and obs.clock == 58
    # Seven of eight tasks have run 59 steps and still run: the median lifetime is not the
    # short ones' (the ends alone would say 11); survival stays above one half.
    assert obs.quantile(0.5) == 59.0
    assert obs.quantile(0.2) == 11.0


def test_plain_bfio_tunes_and_explicit_options_win():
    plain = make_policy("bfio")
    assert plain.tuning is not None and set(plain.options()) >= set(TUNED_OPTIONS)
    assert all(plain.options()[key] == "auto" for key in TUNED_OPTIONS)
    h0 = make_policy("bfio:horizon=0")                 # every other option fixed, H = 0's own defaults
    assert h0.tuning is None
    assert {key: getattr(h0, key) for key in TUNED_OPTIONS} == dict(FIXED_DEFAULTS, horizon=0) | H0_DEFAULTS
    partial = make_policy("bfio:horizon=40,gamma=auto")
    assert partial.tuning is not None and partial.tuning.fixed["horizon"] == 40 and "gamma" not in partial.tuning.fixed
    with pytest.raises(ValueError, match="horizon"):
        make_policy("bfio:horizon=fast")
    with pytest.raises(ValueError, match="not tuned"):
        OnlineTuning({"candidates": 3})


def _switching_workload(n_half: int, seed: int = 0) -> Workload:
    long = synthetic(n_half, seed=seed, prompt_mean=600, prompt_std=300, output_mean=1500, output_std=200)
    short = synthetic(n_half, seed=seed + 1, prompt_mean=600, prompt_std=300, output_mean=12, output_std=4)
    return Workload("switch", np.concatenate([long.prompt_tokens, short.prompt_tokens]),
                    np.concatenate([long.output_tokens, short.output_tokens]))


def test_tuning_follows_a_change_of_traffic():
    """Outputs of about 1,500 tokens, then of about 12: the chosen options, read from each
    decision's info, move from the long preset's to the short one's."""
    workload = _switching_workload(1500)
    policy = make_policy("bfio")
    seen = []
    decide = policy.decide

    def recording(state):
        decision = decide(state)
        if "tuning" in decision.info:
            seen.append(dict(decision.info["tuning"], placed=decision.task_ids.tolist()))
        return decision

    policy.decide = recording
    Simulator(workload, policy, config=SimulationConfig(n_workers=4, slots=8, pool=16),
              predictor=OraclePredictor(workload.output_tokens)).run()
    last_long = max(i for i, d in enumerate(seen) if any(t < 1500 for t in d["placed"]))
    first_short = min(i for i, d in enumerate(seen) if any(t >= 1500 for t in d["placed"]))
    before = seen[first_short - 1]
    assert before["lifetime"] > 1024 and before["gamma"] == 0.9 and before["stride"] == 1, before
    after = [d for d in seen[max(last_long, first_short):] if d["lifetime"] <= 32]
    assert after, "the controller never saw the short regime"
    assert all(d["gamma"] == 0.7 and d["stride"] >= 8 for d in after)
    assert all(d["peak_weight"] == 1000.0 and d["horizon"] <= 72 for d in seen)


def test_router_feeds_plain_bfio_its_states():
    """DecodeRouter builds its own step problems: plain bfio's controller still sees each decision."""
    from barrierlb.router import DecodeRouter

    router = DecodeRouter(4, 4, policy="bfio")
    policy = router.policy
    next_id, decisions, running = 0, 0, {}
    for step in range(3000):
        while router.queued < 8:
            router.add_request(next_id, prompt_tokens=50 + next_id % 7)
            next_id += 1
        placed = router.route()
        decisions += bool(placed)
        running.update({rid: step for rid in placed})
        finished = [rid for rid, start in running.items() if step - start >= 3]   # 4-step lives
        router.step_report(finished)
        for rid in finished:
            del running[rid]
    assert policy.tuning.decisions >= decisions > 1000
    assert policy.tuning.lifetime < 16                  # learned from the router's slots, not the start-up guess
    assert policy.gamma == 0.7 and policy.stride >= 8


def test_observer_ring_buffer_keeps_the_latest_window_and_its_cohort():
    """The kept lifetimes are the ``window`` latest, oldest first, with the step each ended at,
    through many wraps of the buffer and a burst of more ends than the window holds."""
    rng = np.random.default_rng(3)
    obs = LifetimeObserver(window=7, span=10_000)
    ids = np.arange(24).reshape(3, 8)
    age = np.zeros((3, 8), dtype=np.int64)
    next_id, ended, ends_at = 100, [], []
    for step in range(400):
        age += 1
        obs.observe(ids, age)
        gone = rng.random(ids.shape) < (0.9 if step == 200 else 0.05)     # step 200: 9+ ends at once
        ended += (age[gone] + 1).tolist()          # seen at `age`, gone one step later
        ends_at += [step + 1] * int(gone.sum())    # the clock at the next call
        ids, age = ids.copy(), age.copy()
        ids[gone] = np.arange(next_id, next_id + gone.sum())
        next_id += int(gone.sum())
        age[gone] = 0
    assert obs.n_finished == len(ended) - int(gone.sum()) > 7 * 10       # the last step's are not seen yet
    ended, ends_at = ended[:obs.n_finished], ends_at[:obs.n_finished]
    assert obs.lifetimes().tolist() == [float(x) for x in ended[-7:]] and obs.n_kept == 7
    assert obs._kept(obs._end).tolist() == [float(x) for x in ends_at[-7:]]


def _observe_reference(ids, age, state):
    """LifetimeObserver.observe as array code (what the compiled pass replaced): (clock, lifetimes)."""
    previous, before = state.get("ids"), state.get("age")
    state["ids"], state["age"] = ids.copy(), age.copy()
    if previous is None:
        return
    stayed = (previous == ids) & (previous >= 0)
    if stayed.any():
        elapsed = max(int((age - before).max(where=stayed, initial=0)), 0)
    else:
        elapsed = max(int(age.max(where=(ids >= 0) & (ids != previous), initial=0)), 1)
    state["clock"] = state.get("clock", 0) + elapsed
    state["lifetimes"] = state.get("lifetimes", []) + (before[(previous >= 0) & ~stayed] + max(elapsed, 1)).tolist()


@pytest.mark.parametrize("seed", range(20))
def test_compiled_observe_equals_the_array_code(seed):
    rng = np.random.default_rng(seed)
    g, s = (int(v) for v in rng.integers(1, 6, 2))
    obs, ref = LifetimeObserver(span=10_000), {}
    ids = np.full((g, s), -1, dtype=np.int64)
    age = np.zeros((g, s), dtype=np.int64)
    next_id = 0
    for _ in range(40):
        for slot in np.ndindex(g, s):
            if ids[slot] >= 0 and rng.random() < 0.2:
                ids[slot] = -1
            elif ids[slot] < 0 and rng.random() < 0.5:
                ids[slot], age[slot], next_id = next_id, 0, next_id + 1
        age = np.where(ids >= 0, age + rng.integers(0, 3), 0)
        obs.observe(ids, age)
        _observe_reference(ids, age, ref)
        assert obs.clock == ref.get("clock", 0)
        assert obs.lifetimes().tolist() == ref.get("lifetimes", [])
