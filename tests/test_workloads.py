import json
from pathlib import Path

import numpy as np
import pytest

from barrierlb.workloads import WorkloadError, load_workload, synthetic

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def test_synthetic_is_seeded_positive_and_near_the_paper_moments():
    a, b = synthetic(20000, seed=3), synthetic(20000, seed=3)
    assert np.array_equal(a.prompt_tokens, b.prompt_tokens)
    assert (a.prompt_tokens >= 1).all() and (a.output_tokens >= 1).all()
    # Truncation to positive values shifts the means up from 3200 / 1200.
    assert 3200 < a.prompt_tokens.mean() < 4200
    assert 1200 < a.output_tokens.mean() < 1400
    assert not np.array_equal(a.prompt_tokens, synthetic(20000, seed=4).prompt_tokens)


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_csv_loader_with_and_without_timestamps(tmp_path):
    plain = load_workload("csv:" + write(tmp_path, "a.csv", "input_length,output_length\n10,2\n20,0\n"))
    assert plain.prompt_tokens.tolist() == [10, 20] and plain.output_tokens.tolist() == [2, 1]
    assert plain.zero_output_rows == 1 and plain.arrival_s is None
    timed = load_workload("csv:" + write(tmp_path, "b.csv", "timestamp,input_length,output_length\n5,1,1\n3,2,2\n"))
    assert timed.arrival_s.tolist() == [0.0, 2.0] and timed.prompt_tokens.tolist() == [2, 1]


def test_azure_and_mooncake_and_burstgpt_csv(tmp_path):
    azure = load_workload("azure:" + write(tmp_path, "az.csv", "TIMESTAMP,ContextTokens,GeneratedTokens\n"
                                           "2023-11-16 18:17:03.9799600,4808,10\n"
                                           "2023-11-16 18:17:04.0319600,3180,8\n"))
    assert azure.prompt_tokens.tolist() == [4808, 3180]
    assert azure.arrival_s[1] == pytest.approx(0.052, abs=1e-6)
    moon = load_workload("mooncake:" + write(tmp_path, "m.jsonl", '{"timestamp": 0, "input_length": 5, '
                                             '"output_length": 3, "hash_ids": [1]}\n\n'
                                             '{"timestamp": 1500, "input_length": 7, "output_length": 1}\n'))
    assert moon.arrival_s.tolist() == [0.0, 1.5]
    burst = load_workload("burstgpt:" + write(tmp_path, "b.csv", "Timestamp,Model,Request tokens,Response tokens,"
                                              "Total tokens,Log Type\n5,ChatGPT,472,18,490,Conversation log\n"))
    assert burst.prompt_tokens.tolist() == [472] and burst.output_tokens.tolist() == [18]


@pytest.mark.parametrize("name, text, message", [
    ("a.csv", "input_length,output_length\n10,2\n-1,3\n", r"a\.csv:3: input_length"),
    ("b.csv", "input_length,output_length\n10,x\n", r"b\.csv:2: output_length is not a number"),
    ("c.csv", "input_length\n10\n", r"c\.csv:1: missing column"),
    ("d.csv", "input_length,output_length\n1,2,3\n", r"d\.csv:2: expected 2 fields"),
    ("e.csv", "input_length,output_length\n1.5,2\n", r"e\.csv:2: input_length must be a non-negative integer"),
])
def test_malformed_rows_name_file_and_line(tmp_path, name, text, message):
    with pytest.raises(WorkloadError, match=message):
        load_workload("csv:" + write(tmp_path, name, text))


def test_bad_specs(tmp_path):
    with pytest.raises(WorkloadError, match="unknown workload kind"):
        load_workload("parquet:x")
    with pytest.raises(WorkloadError, match="not found"):
        load_workload("csv:/nonexistent/file.csv")
    with pytest.raises(WorkloadError, match="needs a path"):
        load_workload("azure:")
    with pytest.raises(WorkloadError, match=r"m\.jsonl:1: missing timestamp"):
        load_workload("mooncake:" + write(tmp_path, "m.jsonl", '{"input_length": 5, "output_length": 3}\n'))
    with pytest.raises(WorkloadError, match="no requests"):
        load_workload("csv:" + write(tmp_path, "empty.csv", "input_length,output_length\n"))


def test_take_repeats_timed_traces_back_to_back(tmp_path):
    timed = load_workload("csv:" + write(tmp_path, "t.csv", "timestamp,input_length,output_length\n0,1,1\n2,2,2\n"))
    longer = timed.take(5)
    assert longer.prompt_tokens.tolist() == [1, 2, 1, 2, 1]
    assert longer.arrival_s.tolist() == [0.0, 2.0, 4.0, 6.0, 8.0]


@pytest.mark.skipif(not DATA.is_dir(), reason="shared data folder not present")
def test_shared_traces_load_completely():
    burst = load_workload(f"burstgpt:{DATA / 'burstgpt_sample_8000.json'}")
    stats = json.loads((DATA / "burstgpt_sample_8000.json").read_text())["statistics"]
    assert len(burst) == 8000
    assert burst.prompt_tokens.mean() == pytest.approx(stats["input_length"]["mean"])
    azure = load_workload(f"azure:{DATA / 'azure_llm_2023_code.csv'}")
    assert len(azure) == 8819 and azure.arrival_s is not None
    assert 3000 < azure.arrival_s[-1] < 4000           # about one hour
