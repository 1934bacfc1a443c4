"""The MoE expert-parallelism example: layouts stay valid, sticky policies never move a replica."""

import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples" / "moe_expert_parallel"))

from experts import Routing, eplb_pack, replica_counts, sticky_update  # noqa: E402
from run import main  # noqa: E402

from barrierlb import make_policy  # noqa: E402


def test_replicate_rule_and_pack():
    load = np.array([90.0, 30.0, 10.0, 10.0])
    counts = replica_counts(load, 6)
    assert counts.tolist() == [3, 1, 1, 1]
    layout = eplb_pack(counts, load, n_gpus=3, slots=2)
    layout.check(4)
    assert sorted(layout.counts(4).tolist()) == [1, 1, 1, 3]
    assert layout.gpu_load(load).sum() == load.sum()          # every token lands somewhere


def test_sticky_update_keeps_every_surviving_replica_home():
    routing = Routing(16, 4096, seed=3)
    first = routing.step()
    total = 20
    layout = eplb_pack(replica_counts(first, total), first, n_gpus=4, slots=6)
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
    assert not survivors - after_pairs                          # no surviving replica moved
    assert sum(after_pairs.values()) - sum(survivors.values()) == info["placed"] >= 3


def test_example_runs_and_sticky_policies_copy_far_less_than_eplb(tmp_path, capsys):
    out = tmp_path / "moe.json"
    assert main(["--json", str(out)]) == 0
    rows = {r["policy"]: r for r in json.loads(out.read_text())["results"]}
    assert set(rows) == {"static", "eplb", "round-robin", "jsq-tokens", "bfio:horizon=0"}
    assert rows["static"]["weight_copies"] == 0
    assert rows["bfio:horizon=0"]["weight_copies"] < rows["eplb"]["weight_copies"] / 4
    assert rows["eplb"]["idle_fraction"] < rows["static"]["idle_fraction"]
    assert rows["bfio:horizon=0"]["idle_fraction"] < rows["static"]["idle_fraction"]
    assert "bfio:horizon=0" in capsys.readouterr().out


def test_bad_arguments_exit_2(capsys):
    assert main(["--policies", "nope"]) == 2
    assert "unknown policy" in capsys.readouterr().err
