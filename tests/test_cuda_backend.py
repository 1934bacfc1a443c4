"""The CUDA backend: its superstep logic through the named host executor (device="cpu") everywhere,
and on real CUDA streams and devices where CuPy and a GPU are present (marked gpu)."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _gpu import cupy_or_skip

from barrierlb.backends.cuda import CudaBalancer, HostExecutor, StepTimeModel

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "cuda_decode"
sys.path.insert(0, str(EXAMPLE))

import decode_tasks as decode  # noqa: E402

# Loaded under its own name: other examples' tests import a module called ``run`` too.
_spec = importlib.util.spec_from_file_location("cuda_decode_run", EXAMPLE / "run.py")
_example = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_example)
example_main, requests = _example.main, _example.requests


def _specs(n=24, seed=1, dim=16):
    return requests(n, seed=seed, dim=dim, prompt_mean=200, output_mean=12)


def _run_checked(balancer, specs, capacity):
    """Superstep to the end, checking stickiness, capacity and the barrier's arithmetic at every step."""
    for spec in specs:
        balancer.submit(spec["id"], spec)
    home, state = {}, {}
    for _ in range(10_000):
        if not balancer.active and not balancer.waiting:
            break
        report = balancer.step()
        assert report.worker_s.shape == (balancer.n_workers,)
        assert (report.worker_s >= 0).all()
        assert report.barrier_wait_s == pytest.approx(float((report.worker_s.max() - report.worker_s).sum()))
        assert (balancer.ledger.active_count <= capacity).all()
        for g in range(balancer.n_workers):
            for task_id in balancer.ledger.tasks_on(g).tolist():
                task = balancer.task(task_id)
                # A task never moves and keeps the arrays it allocated on its worker.
                assert home.setdefault(task_id, g) == g
                assert state.setdefault(task_id, task.keys) is task.keys
    else:
        pytest.fail("the run did not end")
    return home


@pytest.mark.parametrize("policy, clock", [("round-robin", "wall"), ("greedy", "thread"),
                                           ("bfio:horizon=8", "wall")])
def test_host_executor_runs_every_request_once_sticky_and_within_capacity(policy, clock):
    specs = _specs()
    balancer = CudaBalancer(3, create=decode.create, step=decode.step, cost=decode.cost, policy=policy,
                            capacity=4, device="cpu", host_clock=clock)
    assert balancer.executor.clock == clock
    assert isinstance(balancer.executor, HostExecutor) and balancer.xp is np
    home = _run_checked(balancer, specs, 4)
    assert sorted(home) == [s["id"] for s in specs]
    # Each request ran exactly its output length of steps: the supersteps are at least the longest.
    assert len(balancer.reports) >= max(s["output"] for s in specs)
    assert sum(r.finished for r in balancer.reports) == len(specs)
    assert sum(r.placed for r in balancer.reports) == len(specs)


def test_steps_compute_the_product_on_the_grown_matrix():
    spec = _specs(1)[0]
    task = decode.create(spec, np)
    for _ in range(3):
        decode.step(task, np)
    assert task.rows == spec["prompt"] + 3
    assert np.allclose(task.out, task.keys[: task.rows] @ task.query)
    assert np.array_equal(task.keys[spec["prompt"]], task.query)          # the appended rows are the query


def test_time_model_recovers_overhead_and_unit_cost():
    model = StepTimeModel(window=4)
    assert model.overhead_units() == 0.0                                   # nothing measured yet
    tasks = np.array([1, 3, 2, 0])
    units = np.array([100.0, 50.0, 400.0, 0.0])
    model.observe(tasks, units, 5e-6 * tasks + 2e-9 * units)
    assert model.overhead_s == pytest.approx(5e-6)
    assert model.unit_s == pytest.approx(2e-9)
    assert model.overhead_units() == pytest.approx(2500.0)
    assert model.predict([2], [10.0]) == pytest.approx([1.002e-5])


def test_measured_overhead_enters_new_tasks_in_the_ledger():
    balancer = CudaBalancer(2, create=decode.create, step=decode.step, cost=decode.cost, policy="round-robin",
                            capacity=2, device="cpu")
    balancer.time_model.observe([1, 2], [100.0, 100.0], [3e-6, 4e-6])     # overhead 1 us, 0.02 us per row
    spec = _specs(1)[0]
    balancer.submit(spec["id"], spec)
    work = balancer.planner.lookahead(spec["id"])[0]
    assert work == pytest.approx(spec["prompt"] + balancer.time_model.overhead_units())
    assert balancer.time_model.overhead_units() == pytest.approx(50.0)


def test_failures_name_the_task_and_worker():
    def broken_step(task, xp):
        raise ArithmeticError("boom")

    balancer = CudaBalancer(2, create=decode.create, step=broken_step, cost=decode.cost, device="cpu")
    spec = _specs(1)[0]
    balancer.submit(7, dict(spec, id=7))
    with pytest.raises(RuntimeError, match=r"step\(\) failed for task 7 on host lane \d at superstep 0: "
                                           r"ArithmeticError: boom"):
        balancer.step()

    def broken_create(spec, xp):
        raise MemoryError("out of device memory")

    balancer = CudaBalancer(2, create=broken_create, step=decode.step, device="cpu")
    balancer.submit(3, spec)
    with pytest.raises(RuntimeError, match=r"create\(\) failed for task 3 on host lane \d: MemoryError"):
        balancer.step()
    assert balancer.ledger.n_active == 0                                   # the unbuilt task left the ledger


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="device must be one of"):
        CudaBalancer(2, create=decode.create, step=decode.step, device="tpu")
    with pytest.raises(TypeError, match="number of host lanes"):
        CudaBalancer([0, 1], create=decode.create, step=decode.step, device="cpu")
    with pytest.raises(TypeError, match="must be callable"):
        CudaBalancer(2, create=None, step=decode.step, device="cpu")
    with pytest.raises(ValueError, match="clock must be one of"):
        CudaBalancer(2, create=decode.create, step=decode.step, device="cpu", host_clock="sundial")
    with pytest.raises(ValueError, match="unknown policy"):
        CudaBalancer(2, create=decode.create, step=decode.step, policy="nope", device="cpu")
    balancer = CudaBalancer(2, create=decode.create, step=decode.step, cost=lambda spec: (1.0, 2.0),
                            device="cpu")
    with pytest.raises(ValueError, match=r"cost\(spec\) of task 5 must be a number or \(work, growth, steps\)"):
        balancer.submit(5, {})
    for silent in ("abc", (True, 0.0, 3.0), ("5", 0.0, 3.0)):    # before: float() took them as numbers
        balancer = CudaBalancer(2, create=decode.create, step=decode.step, cost=lambda spec, v=silent: v,
                                device="cpu")
        with pytest.raises(ValueError, match=r"cost\(spec\) of task 5 must be a number or .* of numbers"):
            balancer.submit(5, {})
    balancer = CudaBalancer(2, create=decode.create, step=decode.step, cost=lambda spec: -1.0, device="cpu")
    with pytest.raises(ValueError, match="work must be finite and >= 0"):
        balancer.submit(5, {})
    balancer = CudaBalancer(2, create=decode.create, step=decode.step, device="cpu")
    balancer.submit(1, {})
    with pytest.raises(ValueError, match="duplicate task ids"):
        balancer.submit(1, {})


def test_import_stays_light_and_cuda_needs_the_extra():
    code = ("import sys, barrierlb, barrierlb.backends.cuda; assert 'cupy' not in sys.modules; "
            "from barrierlb.backends.cuda import CudaBalancer\n"
            "try:\n    import cupy\nexcept ImportError:\n"
            "    try:\n        CudaBalancer([], create=print, step=print)\n"
            "    except ImportError as e:\n        assert 'barrierlb[gpu]' in str(e), e\n"
            "    else:\n        raise SystemExit('no ImportError')\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_example_runs_each_policy_on_the_host_executor(tmp_path):
    out = tmp_path / "cuda_decode.json"
    assert example_main(["--device", "cpu", "--workers", "2", "--slots", "3", "--requests", "10", "--dim", "8",
                         "--prompt-mean", "100", "--output-mean", "8", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert [r["policy"] for r in rows] == ["round-robin", "greedy", "bfio"]
    for row in rows:
        assert row["requests"] == 10 and row["device"] == "cpu"
        assert 0.0 <= row["idle_fraction"] <= 1.0
    with pytest.raises(SystemExit):                                        # never overwrites a file
        example_main(["--device", "cpu", "--json", str(out)])


@pytest.mark.gpu
def test_cuda_streams_hold_sticky_device_arrays_and_time_with_events():
    cupy = cupy_or_skip()
    from barrierlb.backends.cuda import CudaExecutor, streams

    specs = _specs(12, dim=64)
    balancer = CudaBalancer(streams(2), create=decode.create, step=decode.step, cost=decode.cost,
                            policy="bfio:horizon=8", capacity=4)
    assert isinstance(balancer.executor, CudaExecutor) and balancer.xp is cupy
    home = _run_checked(balancer, specs, 4)
    assert sorted(home) == [s["id"] for s in specs]
    assert sum(r.finished for r in balancer.reports) == len(specs)
    assert all(r.worker_s.max() > 0 for r in balancer.reports)
    assert balancer.time_model.unit_s >= 0 and balancer.time_model.overhead_s >= 0


@pytest.mark.gpu
def test_cuda_device_workers_allocate_on_their_device():
    cupy = cupy_or_skip()
    from barrierlb.backends.cuda import devices

    workers = devices()
    balancer = CudaBalancer(workers, create=decode.create, step=decode.step, cost=decode.cost,
                            policy="round-robin", capacity=4)
    for spec in _specs(2 * len(workers), dim=32):
        balancer.submit(spec["id"], spec)
    balancer.step()
    assert balancer.active == 2 * len(workers)
    for g in range(len(workers)):
        for task_id in balancer.ledger.tasks_on(g).tolist():
            keys = balancer.task(task_id).keys
            assert isinstance(keys, cupy.ndarray) and keys.device.id == workers[g].id
    balancer.run()
    assert balancer.active == 0


def test_a_failed_create_drops_only_its_task():
    # Before: the tasks of the same decision after the failing one were reported finished
    # too and never ran: lost without a word.
    def create_but_3(spec, xp):
        if spec["id"] == 3:
            raise MemoryError("out of device memory")
        return decode.create(spec, xp)

    specs = [dict(spec, id=i) for i, spec in enumerate(_specs(6))]
    balancer = CudaBalancer(2, create=create_but_3, step=decode.step, cost=decode.cost, device="cpu",
                            policy="round-robin")
    for spec in specs:
        balancer.submit(spec["id"], spec)
    with pytest.raises(RuntimeError, match=r"create\(\) failed for task 3"):
        balancer.step()
    assert balancer.active == 3 and sorted(balancer.planner.waiting_ids().tolist()) == [4, 5]
    for _ in range(1000):
        if not balancer.active and not balancer.waiting:
            break
        balancer.step()
    finished = sum(report.finished for report in balancer.reports)
    assert finished == 5 and balancer.ledger.n_active == 0 and balancer.ledger.n_waiting == 0
