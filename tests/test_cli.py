import json
import subprocess
import sys

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


def test_compare_defaults_pick_the_bfio_preset_for_the_output_lengths(tmp_path):
    from barrierlb.policies.bfio import LLM_DECODE, LLM_DECODE_SHORT

    trace = tmp_path / "short.csv"
    trace.write_text("input_length,output_length\n" + "".join(f"{50 + 7 * i % 300},{1 + i % 40}\n"
                                                               for i in range(300)))
    out = tmp_path / "r.json"
    assert main(["compare", *SMALL, "--workload", f"csv:{trace}", "--json", str(out)]) == 0
    policies = [r["policy"] for r in json.loads(out.read_text())["results"]]
    assert policies == ["fcfs", "jsq-tokens", "bfio:horizon=0", LLM_DECODE_SHORT]
    assert main(["compare", *SMALL, "--json", str(out)]) == 0           # synthetic: outputs ~1,200 tokens
    assert json.loads(out.read_text())["results"][-1]["policy"] == LLM_DECODE


def test_compare_without_an_oracle_runs_the_no_oracle_preset(tmp_path):
    from barrierlb.policies.bfio import LLM_DECODE_NO_ORACLE

    out = tmp_path / "r.json"
    assert main(["compare", *SMALL, "--predictor", "scenarios:4", "--json", str(out)]) == 0
    payload = json.loads(out.read_text())
    assert payload["config"]["predictor"] == "scenarios:4"
    last = payload["results"][-1]
    assert last["policy"] == LLM_DECODE_NO_ORACLE and 0.0 <= last["idle_fraction"] < 1.0


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
