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


# --- unreadable and hostile files: a WorkloadError naming the file, never a raw exception ---

def write_bytes(tmp_path, name, data: bytes):
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


@pytest.mark.parametrize("kind, name, data, message", [
    ("csv", "bin.csv", b"input_length,output_length\n\xff\xfe\x00\x01,1\n", r"bin\.csv: not UTF-8 text"),
    ("mooncake", "bin.jsonl", b'{"timestamp": 0, "input_length": 1, "output_length": 1}\n\x89PNG\xff\n',
     r"bin\.jsonl: not UTF-8 text"),
    ("burstgpt", "bin.json", b'{"data": [{"input_length": 1, "output_length": 1}, \xff\xfe]}',
     r"bin\.json: invalid JSON"),
    ("csv", "wide.csv", b"input_length,output_length\n1," + b"9" * 200_000 + b"\n",
     r"wide\.csv:2: a field is longer than 131,072 characters"),
    ("burstgpt", "deep.json", b'{"data": [' + b"[" * 100_000 + b"]" * 100_000 + b"]}",
     r"deep\.json: data\[0\]: expected an object"),
    ("burstgpt", "deep2.json", b'{"data": [{"input_length": 1, "output_length": 2, "meta": '
     + b"[" * 100_000 + b"]" * 100_000 + b'}, {"input_length": ' + b"[" * 50 + b"]" * 50 + b', "output_length": 1}]}',
     r"deep2\.json: data\[1\]: input_length is not a number"),
    ("mooncake", "deep.jsonl", b'{"timestamp": ' + b"[" * 100_000 + b"]" * 100_000 + b"}\n",
     r"deep\.jsonl:1: JSON nested too deeply"),
    ("csv", "huge.csv", b"input_length,output_length\n1e30,5\n", r"huge\.csv:2: input_length is '1e30', over"),
    ("csv", "big_int.csv", b"input_length,output_length\n5," + b"9" * 40 + b"\n", r"big_int\.csv:2: output_length"),
    ("burstgpt", "bool.json", b'{"data": [{"input_length": true, "output_length": 3}]}',
     r"bool\.json: data\[0\]: input_length is not a number: True"),
    ("burstgpt", "huge.json", b'{"data": [{"input_length": 1e30, "output_length": 3}]}',
     r"huge\.json: data\[0\]: input_length is 1e\+30, over"),
    ("azure", "stamp.csv", b"TIMESTAMP,ContextTokens,GeneratedTokens\n99999999999-01-01 00:00:00,1,1\n",
     r"stamp\.csv:2: TIMESTAMP is not a date-time"),
    ("azure", "y2500.csv", b"TIMESTAMP,ContextTokens,GeneratedTokens\n2500-01-01 00:00:00,1,1\n",
     r"y2500\.csv:2: TIMESTAMP is not a date-time between the years 1678 and 2261"),
])
def test_unreadable_files_raise_workload_errors_naming_the_file(tmp_path, kind, name, data, message):
    with pytest.raises(WorkloadError, match=message):
        load_workload(f"{kind}:{write_bytes(tmp_path, name, data)}")


def test_a_directory_is_reported_as_a_directory(tmp_path):
    with pytest.raises(WorkloadError, match="is a directory, not a file"):
        load_workload(f"csv:{tmp_path}")


def test_a_utf8_byte_order_mark_is_accepted(tmp_path):
    path = write_bytes(tmp_path, "bom.csv", b"\xef\xbb\xbfinput_length,output_length\n10,2\n")
    assert load_workload(f"csv:{path}").prompt_tokens.tolist() == [10]


def test_request_counts_are_bounded_before_anything_is_allocated():
    from barrierlb.workloads import MAX_REQUESTS

    for spec in ("synthetic", "long-context"):
        with pytest.raises(WorkloadError, match="n_requests must be <= 10,000,000"):
            load_workload(spec, n_requests=10_000_000_000)
    with pytest.raises(ValueError, match="n_requests must be <="):
        synthetic(20, seed=0).take(MAX_REQUESTS + 1)


# --- streaming: rows read only as needed, memory bounded by the rows kept ---

def test_untimed_traces_are_read_only_up_to_the_rows_asked_for(tmp_path):
    rows = ",".join(f'{{"input_length": {10 + i}, "output_length": 2}}' for i in range(10))
    path = write(tmp_path, "b.json", '{"data": [' + rows + ', {"input_length": "broken"}]}')
    assert load_workload(f"burstgpt:{path}", n_requests=10).prompt_tokens.tolist() == list(range(10, 20))
    with pytest.raises(WorkloadError, match=r"data\[10\]: needs input_length"):
        load_workload(f"burstgpt:{path}")
    csv_path = write(tmp_path, "c.csv", "input_length,output_length\n1,1\n2,2\nbroken,row\n")
    assert load_workload(f"csv:{csv_path}", n_requests=2).prompt_tokens.tolist() == [1, 2]


def test_loading_a_json_trace_holds_much_less_than_the_file(tmp_path):
    import tracemalloc

    item = '    {\n      "input_length": %d,\n      "output_length": %d\n    }'
    path = tmp_path / "big.json"
    path.write_text('{\n  "data": [\n' + ",\n".join(item % (100 + i % 3000, 1 + i % 900) for i in range(80_000))
                    + "\n  ]\n}\n")
    size = path.stat().st_size                      # about 5.5 MB
    tracemalloc.start()
    try:
        workload = load_workload(f"burstgpt:{path}")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(workload) == 80_000 and workload.output_tokens[-1] == 1 + 79_999 % 900
    # Two int64 columns are 1.3 MB; reading the whole text, or a dict per row, costs more than the file.
    assert peak < 0.5 * size, (peak, size)


def test_shapes_of_top_level_json(tmp_path):
    bare = write(tmp_path, "bare.json", '[{"input_length": 4, "output_length": 2, "extra": {"a": [1]}}]')
    assert load_workload(f"burstgpt:{bare}").prompt_tokens.tolist() == [4]
    first_key_skipped = write(tmp_path, "k.json", '{"statistics": {"x": [[1], {"y": 2}]}, '
                                                  '"data": [{"input_length": 5, "output_length": 1}]}')
    assert load_workload(f"burstgpt:{first_key_skipped}").prompt_tokens.tolist() == [5]
    for text in ('{"statistics": {}}', '{"data": 5}', '"text"'):
        with pytest.raises(WorkloadError, match="expected a JSON object with a 'data' list"):
            load_workload(f"burstgpt:{write(tmp_path, 'x.json', text)}")


# --- generator specs with parameters ---

def test_synthetic_parameters_in_the_spec_match_the_keywords():
    spec = "synthetic:prompt_mean=800,prompt_std=300,output_mean=90,output_std=40,corr=0.5"
    from_spec = load_workload(spec, n_requests=3000, seed=7)
    direct = synthetic(3000, seed=7, prompt_mean=800, prompt_std=300, output_mean=90, output_std=40,
                       correlation=0.5)
    assert np.array_equal(from_spec.prompt_tokens, direct.prompt_tokens)
    assert np.array_equal(from_spec.output_tokens, direct.output_tokens)
    assert from_spec.name == spec
    assert np.corrcoef(from_spec.prompt_tokens, from_spec.output_tokens)[0, 1] > 0.4
    assert load_workload("synthetic", n_requests=50, seed=1).name == "synthetic"


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_long_context_is_the_issue_recipe(seed):
    n = 20_000
    rng = np.random.default_rng(seed)
    prompt = np.clip(np.rint(rng.lognormal(np.log(7000), 1.0, n)), 16, 131072)
    output = np.clip(np.rint(rng.normal(350, 250, n)), 1, 2000)
    workload = load_workload("long-context", seed=seed)
    assert len(workload) == n and workload.prompt_tokens.dtype == np.int64
    assert np.array_equal(workload.prompt_tokens, prompt) and np.array_equal(workload.output_tokens, output)


def test_long_context_parameters():
    workload = load_workload("long-context:prompt_median=2000,prompt_sigma=0.5,prompt_max=8000,output_max=100",
                             n_requests=5000, seed=3)
    assert workload.prompt_tokens.max() <= 8000 and workload.output_tokens.max() <= 100
    assert 1700 < np.median(workload.prompt_tokens) < 2300


@pytest.mark.parametrize("spec, message", [
    ("synthetic:promt_mean=3", r"unknown parameter 'promt_mean' of workload 'synthetic'.*known: prompt_mean"),
    ("synthetic:prompt_mean", r"malformed parameter 'prompt_mean' .*expected key=value"),
    ("synthetic:prompt_mean=,corr=0", r"malformed parameter 'prompt_mean='"),
    ("synthetic:corr=high", r"parameter corr of workload 'synthetic' must be a number, got 'high'"),
    ("synthetic:corr=1.5", r"correlation must be <= 1"),
    ("synthetic:prompt_std=-1", r"prompt_std must be >= 0"),
    ("synthetic:corr=0,corr=0.1", r"parameter 'corr' given twice"),
    ("long-context:prompt_min=2.5", r"prompt_min of workload 'long-context' must be an integer"),
    ("long-context:output_min=50,output_max=10", r"output_min \(50\) must be <= output_max \(10\)"),
    ("long-context:sigma=1", r"unknown parameter 'sigma'.*known: prompt_median, prompt_sigma"),
])
def test_bad_generator_parameters_are_named(spec, message):
    with pytest.raises(WorkloadError, match=message):
        load_workload(spec, n_requests=100)


@pytest.mark.timeout(60)
def test_parameters_that_almost_never_give_positive_tokens_raise_instead_of_drawing_for_ever():
    with pytest.raises(WorkloadError, match="draws had prompt and output of at least one token"):
        load_workload("synthetic:prompt_mean=-100000,prompt_std=10", n_requests=100)


def test_zero_output_rows_counts_the_requests_taken(tmp_path):
    # Before: take() kept the whole trace's count, so the first 2 rows of this trace
    # reported 2 zero-output rows (they have none) and 8 rows (the trace twice) 2, not 4.
    path = write(tmp_path, "z.csv", "timestamp,input_length,output_length\n3,10,0\n0,10,5\n1,10,5\n2,10,0\n")
    assert load_workload("csv:" + path).zero_output_rows == 2
    for n, zeros in ((2, 0), (3, 1), (4, 2), (8, 4)):
        taken = load_workload("csv:" + path, n_requests=n)
        assert taken.zero_output_rows == zeros, n
        assert taken.zero_output_rows == taken.zero_output_index.size if zeros else taken.zero_output_index is None
    untimed = load_workload("csv:" + write(tmp_path, "u.csv", "input_length,output_length\n1,0\n1,3\n"))
    sampled = untimed.take(50, seed=3)
    assert sampled.zero_output_rows == int((np.isin(np.random.default_rng(3).integers(0, 2, 50), [0])).sum())


@pytest.mark.parametrize("fields, message", [
    (([10, 20], [2.7, 3]), "output_tokens must hold integers, got 2.7"),
    (([10, 20], [0, 3]), "output_tokens must be >= 1"),
    (([10, -1], [1, 3]), "prompt_tokens must be non-negative"),
    (([10, 20, 5], [3, 3]), r"output_tokens must have shape \(3,\)"),
    (([10, 20], [3, 3], [5.0, 1.0]), "arrival_s must be non-decreasing, got 5.0 then 1.0"),
    (([10, 20], [3, 3], [0.0, float("nan")]), "arrival_s contains NaN"),
])
def test_a_workload_built_by_hand_is_checked(fields, message):
    # Before: 2.7 output tokens ran as 2, a 0-token output as 1, mismatched lengths failed
    # with an IndexError inside the simulator, and unsorted arrivals gave wrong TTFTs.
    from barrierlb.workloads import Workload

    with pytest.raises((ValueError, TypeError), match=message):
        Workload("hand", *(np.array(f) for f in fields))
    assert Workload("hand", [1, 2], np.array([1, 5], dtype=np.int32)).output_tokens.dtype == np.int64
