"""The benchmarks' ``--json``: an existing file is refused before the run and never overwritten."""

import argparse
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from _common import add_json_argument, check_json_argument, write_json  # noqa: E402


def _parse(argv):
    parser = argparse.ArgumentParser()
    add_json_argument(parser)
    args = parser.parse_args(argv)
    check_json_argument(parser, args)
    return args


def test_an_existing_json_file_is_refused_before_the_run_unless_forced(tmp_path, capsys):
    target = tmp_path / "r.json"
    target.write_text("keep me")
    with pytest.raises(SystemExit) as stopped:
        _parse(["--json", str(target)])
    assert stopped.value.code == 2 and "already exists" in capsys.readouterr().err
    assert target.read_text() == "keep me"
    args = _parse(["--json", str(target), "--force"])
    write_json(args.json, [{"policy": "bfio"}], force=args.force)
    assert json.loads(target.read_text())[0]["policy"] == "bfio"


def test_a_file_that_appeared_during_the_run_is_left_and_the_records_go_beside_it(tmp_path, capsys):
    target = tmp_path / "r.json"
    args = _parse(["--json", str(target)])
    target.write_text("written meanwhile")
    (tmp_path / "r.json.1").write_text("and this")
    write_json(args.json, [{"policy": "vllm"}], force=args.force)
    assert target.read_text() == "written meanwhile" and (tmp_path / "r.json.1").read_text() == "and this"
    record = json.loads((tmp_path / "r.json.2").read_text())[0]
    assert record["policy"] == "vllm" and "environment" in record
    assert "r.json.2" in capsys.readouterr().out


def test_records_are_standard_json_with_null_for_a_metric_that_is_not_a_number(tmp_path):
    # Before: NaN (a ratio with no request waiting) was written as NaN, which strict parsers refuse.
    target = tmp_path / "r.json"
    write_json(str(target), [{"policy": "bfio", "idle_ratio": float("nan"), "runs": [1.0, float("inf")]}])

    def refuse(name):
        raise ValueError(f"not JSON: {name}")

    record = json.loads(target.read_text(), parse_constant=refuse)[0]
    assert record["idle_ratio"] is None and record["runs"] == [1.0, None]
