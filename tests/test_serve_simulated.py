"""benchmarks/serve_simulated.py: the replay's setting in the simulator, and its bounds."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import serve_simulated  # noqa: E402


def test_records_complete_every_request_and_the_floor_bounds_bfio(tmp_path, capsys):
    out = tmp_path / "r.json"
    assert serve_simulated.main(["--samples", "2", "--requests", "240", "--ranks", "8", "--policies",
                                 "vllm,bfio", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert [(r["sample"], r["policy"]) for r in rows] == [(0, "vllm"), (0, "bfio"), (1, "vllm"), (1, "bfio")]
    for r in rows:
        assert r["engine"] == "simulator" and r["submitted"] == r["completed"] == 240 and r["steps_waiting"] > 0
        assert 0 < r["idle_fraction"] < 1
        if r["policy"] == "bfio":
            # The floor holds for any placement of the resident requests, bfio's own included,
            # and for the largest-first re-placement.
            assert 0 <= r["idle_floor"] <= r["idle_fraction"] and r["idle_floor"] <= r["idle_rearranged"]
    said = capsys.readouterr().out
    assert "bfio idle / vllm idle over 2 samples" in said


@pytest.mark.parametrize("argv, message", [(["--policies", "nope"], "unknown policy"),
                                           (["--requests", "100000"], "more than the"),
                                           (["--samples", "0"], "must be positive")])
def test_bad_arguments_are_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as stopped:
        serve_simulated.main(argv)
    assert stopped.value.code == 2 and message in capsys.readouterr().err
