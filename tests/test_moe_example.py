"""The MoE expert-parallelism example: EPLB as eplb.py defines it, valid layouts, priced moves, the CLI."""

import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples" / "moe_expert_parallel"))

from experts import (  # noqa: E402
    Layout,
    Links,
    PhaseRouting,
    PhaseTracker,
    PricedRebalancer,
    Routing,
    balanced_packing,
    eplb_layout,
    replica_counts,
    replicate,
    sticky_update,
)
from run import main  # noqa: E402

from barrierlb import make_policy  # noqa: E402
from barrierlb.migration import imbalance_time_s  # noqa: E402

SMALL = ["--gpus", "4", "--experts", "16", "--redundant", "4", "--groups", "4", "--gpus-per-node", "2",
         "--tokens", "4096", "--steps", "400", "--interval", "50", "--phase-steps", "60", "120", "--routing", "phases"]


def test_balanced_packing_by_hand():
    # Heaviest first, each to the lightest pack with room: 4 -> p0, 3 -> p1, 2 -> p1 (3 < 4), 1 -> p0.
    pack, rank = balanced_packing(np.array([4.0, 3.0, 2.0, 1.0]), 2)
    assert pack.tolist() == [0, 1, 1, 0] and rank.tolist() == [0, 0, 1, 1]
    pack, rank = balanced_packing(np.array([10.0, 1.0, 6.0, 5.0]), 2)  # 10 -> p0, 6 -> p1, 5 -> p1, 1 -> p0
    assert pack.tolist() == [0, 0, 1, 1] and rank.tolist() == [0, 1, 0, 1]
    pack, rank = balanced_packing(np.array([1.0, 9.0, 5.0]), 3)       # one item per pack: item i to pack i
    assert pack.tolist() == [0, 1, 2] and rank.tolist() == [0, 0, 0]
    with pytest.raises(ValueError, match="split evenly"):
        balanced_packing(np.ones(5), 2)


def test_replicate_rule_by_hand():
    physical, count = replicate(np.array([90.0, 30.0, 10.0, 10.0]), 6)
    assert physical.tolist() == [0, 1, 2, 3, 0, 0] and count.tolist() == [3, 1, 1, 1]   # 90 > 45 > 30
    assert replica_counts(np.array([90.0, 30.0, 10.0, 10.0]), 6).tolist() == [3, 1, 1, 1]
    with pytest.raises(ValueError, match="cannot cover"):
        replicate(np.ones(4), 3)


def test_eplb_global_by_hand():
    # Replicas carry 30, 30, 10, 10, 30, 30 (expert 0 split three ways); packed two per GPU.
    layout = eplb_layout(np.array([90.0, 30.0, 10.0, 10.0]), 6, 3)
    assert layout.expert == [0, 0, 1, 2, 0, 3] and layout.gpu == [0, 0, 1, 1, 2, 2]
    assert layout.gpu_load(np.array([90.0, 30.0, 10.0, 10.0])).tolist() == [60.0, 40.0, 40.0]


def test_eplb_hierarchical_by_hand_and_groups_stay_on_their_node():
    # Groups (0, 1) and (2, 3), one per node; each node replicates its own experts to 3 replicas.
    layout = eplb_layout(np.array([10.0, 1.0, 1.0, 8.0]), 6, 2, n_groups=2, n_nodes=2)
    assert layout.expert == [0, 0, 1, 3, 3, 2] and layout.gpu == [0, 0, 0, 1, 1, 1]
    rng = np.random.default_rng(1)
    weight = rng.gamma(1.0, 100.0, 32)
    layout = eplb_layout(weight, 48, 8, n_groups=8, n_nodes=2, slots=7)
    layout.check(32)
    assert np.bincount(layout.gpu, minlength=8).tolist() == [6] * 8
    node_of_group = {}
    for e, g in zip(layout.expert, layout.gpu):
        assert node_of_group.setdefault(e // 4, g // 4) == g // 4        # a group's replicas share one node
    with pytest.raises(ValueError, match="multiple"):
        eplb_layout(weight, 47, 8)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 3), st.integers(1, 2), st.integers(1, 3), st.integers(0, 2),
       st.lists(st.floats(0, 1e4), min_size=24, max_size=24))
def test_eplb_layouts_fill_every_gpu_and_cover_every_expert(nodes, gpus_per_node, per_gpu, groups_per_node, weights):
    n_gpus, weight = nodes * gpus_per_node, np.array(weights)
    n_groups = nodes * 2**groups_per_node                                   # divides 24: groups of 2 to 24
    n_physical = -(-24 // (n_gpus * per_gpu)) * n_gpus * per_gpu            # enough replicas, a multiple of GPUs
    for layout in (eplb_layout(weight, n_physical, n_gpus),
                   eplb_layout(weight, n_physical, n_gpus, n_groups=n_groups, n_nodes=nodes)):
        layout.check(24)
        assert np.bincount(layout.gpu, minlength=n_gpus).tolist() == [n_physical // n_gpus] * n_gpus
        assert layout.gpu_load(weight).sum() == pytest.approx(weight.sum())
    assert eplb_layout(weight, n_physical, n_gpus).counts(24).tolist() == replica_counts(weight, n_physical).tolist()


def test_routings_are_seeded_and_phases_switch():
    for make in (lambda s: Routing(16, 512, seed=s), lambda s: PhaseRouting(16, 512, phase_steps=(5, 10), seed=s)):
        a, b, c = make(3), make(3), make(4)
        first = np.array([a.step() for _ in range(40)])
        assert np.array_equal(first, np.array([b.step() for _ in range(40)]))
        assert not np.array_equal(first, np.array([c.step() for _ in range(40)]))
        assert (first.sum(axis=1) == 512).all()
    routing = PhaseRouting(16, 512, phase_steps=(5, 10), seed=0)
    for _ in range(40):
        routing.step()
    assert 4 <= routing.switches <= 8
    with pytest.raises(ValueError, match="phase_steps"):
        PhaseRouting(16, 512, phase_steps=(10, 5))


def test_tracker_detects_a_switch_and_predicts_the_new_phase():
    routing = PhaseRouting(32, 8192, phase_steps=(100, 100), noise=0.1, seed=2)
    tracker = PhaseTracker(32)
    for _ in range(130):
        tracker.observe(routing.step())
    assert routing.switches == 1 and tracker.lengths and 95 <= tracker.lengths[0] <= 110
    shares = np.exp(routing.profiles[routing.phase])
    predicted = tracker.predicted_load()
    assert 0.5 * np.abs(predicted / predicted.sum() - shares / shares.sum()).sum() < 0.1


def _priced(bandwidth_bytes_per_s, budget=8):
    links = Links(bandwidth_bytes_per_s, bandwidth_bytes_per_s, 2)
    return PricedRebalancer(16, 42 * 2**20, 1e-7, links, budget=budget)


def test_priced_moves_pay_respect_the_budget_and_keep_layouts_valid():
    rng = np.random.default_rng(0)
    start = rng.gamma(1.0, 200.0, 16)
    layout = eplb_layout(start, 20, 4, slots=6)
    predicted = rng.gamma(1.0, 200.0, 16)                              # a new phase: other experts are hot
    unit = 1e-7 / 4
    before = imbalance_time_s(layout.gpu_load(predicted)[None], unit, weights=[500.0])
    frozen, _ = _priced(1.0).update(layout, predicted, 500)            # 1 byte/s: no copy can pay
    assert Links(1.0, 1.0, 2).copy_seconds(layout, frozen, 1.0) == (0, 0.0)    # (moves onto a GPU that holds
    assert frozen.homes() <= layout.homes()                                     # the expert ship nothing)
    for budget in (1, 3, 50):
        after, info = _priced(450e9, budget).update(layout, predicted, 500)
        after.check(16)
        assert (np.bincount(after.gpu, minlength=4) <= 6).all()
        assert 0 < info["moves"] + info["retargets"] <= budget
        copies, _ = Links(450e9, 450e9, 2).copy_seconds(layout, after, 1.0)
        assert copies <= budget
        assert imbalance_time_s(after.gpu_load(predicted)[None], unit, weights=[500.0]) < before


def test_sticky_update_keeps_every_surviving_replica_home():
    routing = Routing(16, 4096, seed=3)
    first = routing.step()
    total = 20
    layout = eplb_layout(first, total, 4, slots=6)
    for _ in range(30):
        routing.step()
    later = routing.step()
    counts = replica_counts(later, total)
    before = list(zip(layout.expert, layout.gpu))
    after, info = sticky_update(layout, counts, later, make_policy("bfio:horizon=0"), churn=3)
    after.check(16)
    assert after.counts(16).tolist() == counts.tolist()
    after_pairs = Counter(zip(after.expert, after.gpu))
    survivors = Counter(before) - Counter(info["retired"])
    assert not survivors - after_pairs                                  # no surviving replica moved
    assert sum(after_pairs.values()) - sum(survivors.values()) == info["placed"] >= 3


def test_copy_time_uses_the_nearest_holder_and_parallel_links():
    links = Links(100.0, 10.0, 2)                                       # GPUs 0, 1 on node 0; 2, 3 on node 1
    before = Layout(4, 3, [0, 1, 2, 3], [0, 1, 2, 3])
    after = Layout(4, 3, [0, 1, 2, 3, 0, 1], [0, 1, 2, 3, 1, 2])        # expert 0 to GPU 1, expert 1 to GPU 2
    copies, seconds = links.copy_seconds(before, after, 100.0)
    assert copies == 2 and seconds == pytest.approx(10.0)               # 100 B at 10 B/s across; 1 s within


def test_example_writes_records_and_priced_moves_far_less_than_eplb(tmp_path, capsys):
    out = tmp_path / "moe.json"
    assert main([*SMALL, "--json", str(out)]) == 0
    records = json.loads(out.read_text())
    assert isinstance(records, list)
    rows = {(r["policy"], r["link"]): r for r in records}
    policies = {"static", "eplb", "eplb-hierarchical", "jsq-tokens", "bfio:horizon=0", "priced"}
    assert set(rows) == {(p, link) for p in policies for link in ("nvlink", "inter-node")}
    for r in records:
        for key in ("policy", "gpus", "experts", "routing", "link", "idle_fraction", "weight_copies",
                    "bytes_moved", "total_time_s", "phases", "phase_steps", "noise", "routing_seed"):
            assert key in r
        assert r["total_time_s"] == pytest.approx(r["compute_time_s"] + r["transfer_time_s"])
        assert r["bytes_moved"] == r["weight_copies"] * r["expert_mb"] * 2**20
        assert r["routing"] == "phases" and r["gpus"] == 4 and r["experts"] == 16
    assert rows["static", "nvlink"]["weight_copies"] == 0
    for link in ("nvlink", "inter-node"):
        assert rows["priced", link]["bytes_moved"] < rows["eplb", link]["bytes_moved"] / 2
        assert rows["eplb", link]["idle_fraction"] < rows["static", link]["idle_fraction"]
        assert rows["priced", link]["idle_fraction"] < rows["static", link]["idle_fraction"]
    assert rows["eplb", "inter-node"]["transfer_time_s"] > rows["eplb", "nvlink"]["transfer_time_s"]
    assert "priced" in capsys.readouterr().out


def test_same_seed_same_records(tmp_path):
    paths = [tmp_path / f"{n}.json" for n in range(2)]
    for path in paths:
        assert main([*SMALL, "--steps", "200", "--policies", "eplb;priced", "--link", "inter-node",
                     "--json", str(path)]) == 0
    first, second = (json.loads(p.read_text()) for p in paths)
    for a, b in zip(first, second):
        a.pop("decision_ms_p50"), b.pop("decision_ms_p50")
        assert a == b


def test_records_and_plot_never_replace_files_that_appeared_during_the_run(tmp_path, capsys, monkeypatch):
    # Before: --json and --plot were refused before the run, then written with write_text and
    # savefig, so a file created at either path during the run was replaced.
    pytest.importorskip("matplotlib")
    import run

    out, plot = tmp_path / "moe.json", tmp_path / "pareto.png"
    real = run.run_policy

    def policy_then_another_writer(*args, **kwargs):
        record = real(*args, **kwargs)
        out.write_text("another run")
        plot.write_text("another plot")
        return record

    monkeypatch.setattr(run, "run_policy", policy_then_another_writer)
    assert main([*SMALL, "--steps", "100", "--policies", "static;priced", "--link", "nvlink",
                 "--json", str(out), "--plot", str(plot)]) == 0
    assert out.read_text() == "another run" and plot.read_text() == "another plot"
    assert len(json.loads((tmp_path / "moe.json.1").read_text())) == 2
    assert (tmp_path / "pareto.png.1").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    said = capsys.readouterr().out
    assert f"{out} appeared during the run; it is left as it was" in said and "pareto.png.1" in said


def test_pareto_plot_is_written(tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "pareto.png"
    assert main([*SMALL, "--steps", "100", "--policies", "static;priced", "--plot", str(path)]) == 0
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("argv, message", [
    (["--policies", "nope"], "unknown policy"),
    (["--policies", "eplb:interval=0"], "interval must be >= 1"),
    (["--policies", "priced:speed=3"], "priced takes options"),
])
def test_bad_policies_exit_2(argv, message, capsys):
    assert main([*SMALL, *argv]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--link", "ethernet"], "--link"),
    (["--gpus", "3"], "multiple"),
    (["--inter-node-gbs", "0"], "must be > 0"),
    (["--phase-steps", "9", "3"], "--phase-steps"),
    (["--noise", "nan"], "--noise must be finite"),
])
def test_bad_arguments_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as stop:
        main([*SMALL, *argv])
    assert stop.value.code == 2
    assert message in capsys.readouterr().err


def test_existing_output_is_not_overwritten(tmp_path, capsys):
    path = tmp_path / "moe.json"
    path.write_text("keep")
    with pytest.raises(SystemExit):
        main([*SMALL, "--json", str(path)])
    assert path.read_text() == "keep" and "not overwriting" in capsys.readouterr().err
