import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from barrierlb.cli import main, split_policies

SMALL = ["--requests", "400", "--workers", "4", "--slots", "8", "--pool", "16", "--no-progress"]


def test_split_policies_keeps_options_with_their_policy():
    assert split_policies("fcfs,bfio:horizon=0,gamma=0.9,jsq") == ["fcfs", "bfio:horizon=0,gamma=0.9", "jsq"]
    assert split_policies("bfio:horizon=4;bfio:horizon=8") == ["bfio:horizon=4", "bfio:horizon=8"]


def test_compare_writes_json_with_the_policy_strings_and_a_plot(tmp_path, capsys):
    out, png = tmp_path / "r.json", tmp_path / "r.png"
    code = main(["compare", *SMALL, "--policies", "fcfs,bfio:horizon=4", "--json", str(out), "--plot", str(png)])
    assert code == 0
    payload = json.loads(out.read_text())
    assert [r["policy"] for r in payload["results"]] == ["fcfs", "bfio:horizon=4"]
    keys = {"avg_imbalance", "idle_fraction", "balancedness", "throughput_tok_s", "tpot_mean_s", "ttft_p99_s",
            "energy_j", "energy_per_token_j", "decision_ms_p50", "decision_ms_p99"}
    assert keys <= set(payload["results"][0])
    assert payload["config"]["workers"] == 4
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert "bfio:horizon=4" in capsys.readouterr().out


def test_simulate_dumps_per_worker_loads(tmp_path):
    csv = tmp_path / "loads.csv"
    assert main(["simulate", *SMALL, "--policy", "jsq", "--csv", str(csv)]) == 0
    lines = csv.read_text().splitlines()
    assert lines[0] == "step,step_time_s,worker_0,worker_1,worker_2,worker_3"
    assert len(lines) > 10


@pytest.mark.parametrize("argv, message", [
    (["compare", "--policies", "nope"], "unknown policy 'nope'"),
    (["compare", "--workload", "csv:/no/such.csv"], "workload file not found"),
    (["compare", "--predictor", "magic"], "unknown predictor"),
    (["compare", "--power", "toaster"], "unknown power preset"),
    (["simulate", "--arrivals", "trace"], "no timestamps"),
])
def test_user_mistakes_give_one_line_and_exit_2(argv, message, capsys):
    assert main(argv + SMALL) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_bad_flag_values_are_rejected_by_the_parser():
    result = subprocess.run([sys.executable, "-m", "barrierlb", "compare", "--workers", "-3"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "expected a positive integer" in result.stderr and "Traceback" not in result.stderr


def test_malformed_trace_is_reported_with_file_and_line(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("input_length,output_length\n1,2\n3,oops\n")
    assert main(["compare", *SMALL, "--workload", f"csv:{bad}"]) == 2
    assert f"{bad}:3: output_length is not a number" in capsys.readouterr().err


def test_compare_defaults_run_plain_bfio_whatever_the_output_lengths(tmp_path):
    trace = tmp_path / "short.csv"
    trace.write_text("input_length,output_length\n" + "".join(f"{50 + 7 * i % 300},{1 + i % 40}\n"
                                                               for i in range(300)))
    out = tmp_path / "r.json"
    assert main(["compare", *SMALL, "--workload", f"csv:{trace}", "--json", str(out)]) == 0
    policies = [r["policy"] for r in json.loads(out.read_text())["results"]]
    assert policies == ["fcfs", "jsq-tokens", "bfio:horizon=0", "bfio"]
    assert main(["compare", *SMALL, "--json", str(out), "--force"]) == 0   # synthetic: outputs ~1,200 tokens
    assert [r["policy"] for r in json.loads(out.read_text())["results"]] == policies


def test_compare_without_an_oracle_runs_the_no_oracle_preset(tmp_path):
    from barrierlb.policies.bfio import LLM_DECODE_NO_ORACLE

    out = tmp_path / "r.json"
    assert main(["compare", *SMALL, "--predictor", "scenarios:4", "--json", str(out)]) == 0
    payload = json.loads(out.read_text())
    assert payload["config"]["predictor"] == "scenarios:4"
    last = payload["results"][-1]
    assert last["policy"] == LLM_DECODE_NO_ORACLE and 0.0 <= last["idle_fraction"] < 1.0


# --- issue 12: every user mistake is one line and exit status 2, before any long run ---

def one_line_error(capsys, *, no_run: bool = False) -> str:
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and len(captured.err.strip().splitlines()) == 1, captured.err
    if no_run:                            # refused before simulating: no table, no timing line
        assert "simulated" not in captured.out and "policy" not in captured.out, captured.out
    return captured.err


def trace(tmp_path, name: str, data: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


@pytest.mark.parametrize("name, data, message", [
    ("bin.csv", b"input_length,output_length\n\xff\xfe\x00,1\n", "not UTF-8 text"),
    ("wide.csv", b"input_length,output_length\n1," + b"7" * 200_000 + b"\n", "longer than 131,072 characters"),
    ("huge.csv", b"input_length,output_length\n1e30,5\n", "input_length is '1e30', over"),
    ("deep.json", b'{"data": [' + b"[" * 100_000 + b"]" * 100_000 + b"]}", "expected an object"),
])
def test_hostile_trace_files_give_one_line(tmp_path, capsys, name, data, message):
    kind = "burstgpt" if name.endswith(".json") else "csv"
    assert main(["compare", *SMALL, "--workload", f"{kind}:{trace(tmp_path, name, data)}"]) == 2
    assert message in one_line_error(capsys)


@pytest.mark.parametrize("argv, message", [
    (["--requests", "10000000000"], "expected at most 10,000,000"),
    (["--workload", "synthetic:prompt_mean=lots"], "parameter prompt_mean of workload 'synthetic' must be a number"),
    (["--workload", "long-context:median=3"], "unknown parameter 'median'"),
    (["--max-steps", "0"], "argument --max-steps: expected a positive integer"),
])
def test_bad_values_give_one_line(argv, message):
    result = subprocess.run([sys.executable, "-m", "barrierlb", "compare", "--no-progress", *argv],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_a_directory_workload_is_named_a_directory(tmp_path, capsys):
    assert main(["compare", *SMALL, "--workload", f"csv:{tmp_path}"]) == 2
    assert "is a directory, not a file" in one_line_error(capsys)


def _trace_file(tmp_path) -> Path:
    path = tmp_path / "trace.csv"
    path.write_text("input_length,output_length\n" + "".join(f"{40 + i % 90},{1 + i % 15}\n" for i in range(200)))
    return path


@pytest.mark.parametrize("command, flag", [("compare", "--json"), ("compare", "--plot"), ("simulate", "--csv"),
                                           ("simulate", "--json")])
@pytest.mark.parametrize("alias", ["same", "relative", "symlink", "hardlink"])
def test_outputs_never_overwrite_the_input_trace(tmp_path, capsys, monkeypatch, command, flag, alias):
    source = _trace_file(tmp_path)
    before = source.read_bytes()
    if flag == "--plot":                  # the suffix is checked too: a trace named like a plot
        source = source.rename(tmp_path / "trace.png")
        source.write_bytes(before)
    monkeypatch.chdir(tmp_path)
    target = {"same": str(source), "relative": f"./{source.name}", "symlink": str(tmp_path / "link"),
              "hardlink": str(tmp_path / "hard")}[alias]
    if alias == "symlink":
        os.symlink(source, target)
    elif alias == "hardlink":
        os.link(source, target)
    extra = ["--policies", "fcfs"] if command == "compare" else ["--policy", "fcfs"]
    assert main([command, *SMALL, *extra, "--workload", f"csv:{source}", flag, target]) == 2
    assert "is the input trace" in one_line_error(capsys, no_run=True)
    assert source.read_bytes() == before


def test_two_outputs_on_one_file_are_refused(tmp_path, capsys):
    out = str(tmp_path / "out.txt")
    assert main(["simulate", *SMALL, "--policy", "fcfs", "--csv", out, "--json", out]) == 2
    assert "name the same file" in one_line_error(capsys, no_run=True)
    assert not (tmp_path / "out.txt").exists()


@pytest.mark.parametrize("plot, message", [("loads.txt", "must end in .png, .pdf, .svg"),
                                           ("loads", "must end in .png"), ("folder", "is a directory"),
                                           ("missing/loads.png", "does not exist")])
def test_plot_paths_are_checked_before_the_run(tmp_path, capsys, plot, message):
    (tmp_path / "folder").mkdir()
    assert main(["compare", *SMALL, "--policies", "fcfs", "--plot", str(tmp_path / plot)]) == 2
    assert message in one_line_error(capsys, no_run=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder"]      # no folder.png, no loads.txt


def test_plot_formats_follow_the_suffix(tmp_path):
    svg = tmp_path / "loads.svg"
    assert main(["compare", *SMALL, "--policies", "fcfs", "--plot", str(svg)]) == 0
    assert b"<svg" in svg.read_bytes()[:400]


def test_plot_loads_refuses_a_bad_path_itself(tmp_path):
    from barrierlb.plots import check_plot_path, plot_loads

    with pytest.raises(ValueError, match="is a directory"):
        plot_loads([], tmp_path)
    with pytest.raises(ValueError, match="must end in"):
        check_plot_path(tmp_path / "x.txt")
    assert check_plot_path(tmp_path / "x.PDF").name == "x.PDF"


# --- issue 12: a run is bounded in steps ---

def test_the_simulator_has_a_finite_default_step_cap():
    from barrierlb.simulator import DEFAULT_MAX_STEPS, SimulationConfig

    assert SimulationConfig().max_steps == DEFAULT_MAX_STEPS and 100_000 <= DEFAULT_MAX_STEPS < 10**8
    assert SimulationConfig(max_steps=None).max_steps is None


@pytest.mark.timeout(120)
def test_an_output_of_a_trillion_tokens_stops_at_once_under_the_default_cap(tmp_path, capsys):
    source = trace(tmp_path, "one.csv", b"input_length,output_length\n10,1000000000000\n5,3\n")
    assert main(["simulate", "--no-progress", "--policy", "fcfs", "--workload", f"csv:{source}"]) == 2
    err = one_line_error(capsys)
    assert "1,000,000,000,000 output tokens, more than --max-steps 1,000,000" in err


def test_a_run_that_reaches_max_steps_stops_with_a_message(tmp_path, capsys):
    out = tmp_path / "r.json"
    source = trace(tmp_path, "t.csv", b"input_length,output_length\n" + b"5,3\n" * 400)
    argv = ["simulate", "--workload", f"csv:{source}", "--workers", "1", "--slots", "1", "--pool", "4",
            "--no-progress", "--policy", "fcfs", "--json", str(out)]
    assert main([*argv, "--max-steps", "100"]) == 2           # 400 requests of 3 steps each, one slot
    err = one_line_error(capsys)
    assert "fcfs: stopped at --max-steps 100 with 367 of 400 requests unfinished" in err
    assert not out.exists()
    assert main([*argv, "--max-steps", "1200"]) == 0
    assert json.loads(out.read_text())["results"][0]["truncated"] is False


# --- issue 15: workload specs with parameters ---

def test_compare_runs_a_parameterised_workload(tmp_path):
    out = tmp_path / "r.json"
    spec = "synthetic:prompt_mean=600,prompt_std=200,output_mean=30,output_std=10,corr=0"
    assert main(["compare", *SMALL, "--policies", "fcfs", "--workload", spec, "--json", str(out)]) == 0
    config = json.loads(out.read_text())["config"]
    assert config["workload"] == spec and config["workload_name"] == spec and config["requests"] == 400
    assert main(["compare", *SMALL, "--policies", "fcfs", "--workload", "long-context", "--json", str(out),
                 "--force"]) == 0
    assert json.loads(out.read_text())["config"]["workload_name"] == "long-context"


def test_help_says_how_a_short_trace_is_repeated(capsys):
    with pytest.raises(SystemExit):
        main(["compare", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "a timed one back to back in its order" in text and "long-context" in text and "--max-steps" in text


def test_a_cluster_too_large_for_memory_is_one_line(capsys):
    assert main(["simulate", "--workers", "100000000", "--slots", "100000000", "--requests", "10",
                 "--policy", "fcfs", "--no-progress"]) == 2
    assert "out of memory" in one_line_error(capsys, no_run=True)


def test_energy_flags_reach_the_json_and_keep_the_old_keys(tmp_path):
    out = tmp_path / "r.json"
    assert main(["compare", *SMALL, "--policies", "fcfs;jsq-tokens", "--power", "absolute", "--step-time",
                 "roofline", "--accelerator", "h200", "--model", "llama-3-70b", "--json", str(out)]) == 0
    payload = json.loads(out.read_text())
    config = payload["config"]
    assert (config["power"], config["power_model"], config["accelerator"], config["model"], config["step_time"]) \
        == ("absolute", "absolute", "h200", "llama-3-70b", "roofline")
    for row in payload["results"]:
        assert {"energy_j", "energy_per_token_j", "average_power_w"} <= set(row)
        assert row["average_power_w"] == pytest.approx(row["energy_per_token_j"] * row["throughput_tok_s"])
        # A worker of 4 H200s draws between 4 x 175 W and 4 x 700 W.
        assert 4 * 4 * 175 <= row["average_power_w"] <= 4 * 4 * 700


def test_default_energy_flags_are_the_papers_setup(tmp_path):
    from barrierlb.cli import build_parser, energy_models
    from barrierlb.energy import PowerModel, StepTimeModel

    step_time, power = energy_models(build_parser().parse_args(["compare"]))
    assert step_time == StepTimeModel.paper(72)
    assert isinstance(power, PowerModel) and (power.idle_w, power.max_w, power.exponent) == (100.0, 400.0, 0.7)
    legacy = tmp_path / "legacy.json"
    new = tmp_path / "new.json"
    assert main(["compare", *SMALL, "--policies", "fcfs", "--power", "paper", "--json", str(legacy)]) == 0
    assert main(["compare", *SMALL, "--policies", "fcfs", "--json", str(new)]) == 0
    assert json.loads(legacy.read_text())["results"][0]["energy_j"] == \
        json.loads(new.read_text())["results"][0]["energy_j"]


@pytest.mark.parametrize("argv, message", [
    (["compare", "--power", "warm"], "unknown power preset or model 'warm'"),
    (["compare", "--accelerator", "tpu-v9"], "unknown accelerator 'tpu-v9'; known: paper, a100"),
    (["compare", "--step-time", "roofline", "--model", "gpt-9"], "unknown model 'gpt-9'"),
    (["compare", "--model", "llama-3-70b"], "--model needs --step-time roofline"),
    (["compare", "--wait-w", "200"], "--wait-w applies to --power absolute only"),
    (["compare", "--power", "absolute", "--wait-w", "900"], "--wait-w must lie between"),
    (["compare", "--power", "h100-sxm", "--accelerator", "h100"], "give --power relative --accelerator NAME"),
])
def test_energy_flag_mistakes_give_one_line_and_exit_2(argv, message, capsys):
    assert main(argv + SMALL) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_presets_lists_every_name_with_a_source(capsys):
    from barrierlb.energy import POWER_PRESETS
    from barrierlb.hardware import ACCELERATOR_PRESETS, MODEL_PRESETS

    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    for name in [*ACCELERATOR_PRESETS, *MODEL_PRESETS, *POWER_PRESETS]:
        assert name in out
    assert "datasheet" in out and "arXiv 2412.19437" in out


def test_step_time_choice_is_checked_by_the_parser():
    result = subprocess.run([sys.executable, "-m", "barrierlb", "compare", "--step-time", "quadratic"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "invalid choice: 'quadratic'" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("command, flag, name", [("compare", "--json", "r.json"), ("compare", "--plot", "r.png"),
                                                 ("simulate", "--csv", "r.csv"), ("simulate", "--json", "r.json")])
def test_an_existing_output_is_kept_unless_forced(tmp_path, capsys, command, flag, name):
    # Before: an earlier run's results were overwritten without a word.
    target = tmp_path / name
    target.write_bytes(b"earlier results")
    extra = ["--policies", "fcfs"] if command == "compare" else ["--policy", "fcfs"]
    assert main([command, *SMALL, *extra, flag, str(target)]) == 2
    assert "the file exists; pass --force to overwrite it" in capsys.readouterr().err
    assert target.read_bytes() == b"earlier results"
    assert main([command, *SMALL, *extra, flag, str(target), "--force"]) == 0
    assert target.read_bytes() != b"earlier results"


def test_json_output_is_standard_json_when_a_metric_is_not_a_number(tmp_path):
    # Before: TPOT of a run whose requests decode one token each was written as NaN,
    # which is not JSON (jq, JavaScript and other strict parsers refuse the file).
    trace, out = tmp_path / "one.csv", tmp_path / "r.json"
    trace.write_text("input_length,output_length\n10,1\n20,1\n")
    assert main(["simulate", "--workload", f"csv:{trace}", "--workers", "2", "--slots", "2", "--pool", "2",
                 "--policy", "fcfs", "--no-progress", "--json", str(out)]) == 0

    def refuse(name):
        raise ValueError(f"not JSON: {name}")

    result = json.loads(out.read_text(), parse_constant=refuse)["results"][0]
    assert result["tpot_mean_s"] is None and result["throughput_tok_s"] > 0


def test_a_policy_that_never_places_is_one_line(capsys):
    argv = ["simulate", *SMALL, "--workload", "synthetic:output_mean=5,output_std=1", "--max-steps", "20",
            "--policy", "bfio:horizon=0,work_conserving=false,max_wait=none"]
    assert main(argv) == 2
    assert "placed nothing in 20 decisions with no request running" in capsys.readouterr().err


def test_a_failed_write_leaves_the_earlier_file_and_no_partial_one(tmp_path, capsys, monkeypatch):
    # Before: the output was opened in place, so a write that failed half way (a full disk)
    # left half a file where, with --force, the earlier results had been.
    target = tmp_path / "r.json"
    target.write_text("earlier results")
    real_write_text = Path.write_text

    def half_then_full_disk(self, text, *args, **kwargs):
        real_write_text(self, text[: len(text) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_text", half_then_full_disk)
    assert main(["simulate", *SMALL, "--policy", "fcfs", "--json", str(target), "--force"]) == 2
    assert "No space left on device" in capsys.readouterr().err
    monkeypatch.setattr(Path, "write_text", real_write_text)
    assert target.read_text() == "earlier results" and sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]
    csv = tmp_path / "loads.csv"
    assert main(["simulate", *SMALL, "--policy", "fcfs", "--csv", str(csv)]) == 0
    assert csv.read_text().startswith("step,step_time_s,worker_0") and not list(tmp_path.glob(".*partial*"))


@pytest.mark.parametrize("command, flag, name", [("compare", "--json", "r.json"), ("simulate", "--csv", "r.csv")])
def test_an_output_that_appeared_during_the_run_is_left_and_the_results_go_beside_it(tmp_path, capsys, monkeypatch,
                                                                                    command, flag, name):
    # Before: the check ran before the simulation, and a file created during it was replaced.
    import barrierlb.cli as cli

    target = tmp_path / name
    real_run = cli._run

    def run_then_another_writer(*args, **kwargs):
        results = real_run(*args, **kwargs)
        target.write_text("another run's results")
        return results

    monkeypatch.setattr(cli, "_run", run_then_another_writer)
    extra = ["--policies", "fcfs"] if command == "compare" else ["--policy", "fcfs"]
    assert main([command, *SMALL, *extra, flag, str(target)]) == 0
    assert target.read_text() == "another run's results"
    assert f"{name}.1 ({target} appeared during the run; it is left as it was)" in capsys.readouterr().err
    assert (tmp_path / f"{name}.1").stat().st_size > 100
