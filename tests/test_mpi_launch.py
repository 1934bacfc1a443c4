"""Runs the MPI test suite and the MPI example under a real ``mpiexec`` from the plain pytest run."""

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MPIEXEC = shutil.which("mpiexec", path=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""))
pytestmark = pytest.mark.skipif(MPIEXEC is None, reason="no mpiexec: pip install 'barrierlb[mpi,mpi-runtime]'")


def mpirun(n, *args, timeout=240):
    """Run ``mpiexec -n N python -m mpi4py ARGS``; past ``timeout`` the whole process group is
    killed (ranks included, not only mpiexec) and the test fails as a hang."""
    cmd = [MPIEXEC, "-n", str(n), sys.executable, "-m", "mpi4py", *args]
    process = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        pytest.fail(f"mpiexec {' '.join(args)} hung for {timeout} s:\n{stdout[-2000:]}\n{stderr[-2000:]}")
    return subprocess.CompletedProcess(cmd, process.returncode, stdout, stderr)


@pytest.mark.parametrize("ranks", [2, 4])
def test_mpi_suite_under_mpiexec(ranks):
    result = mpirun(ranks, "-m", "pytest", "--with-mpi", "-p", "no:cacheprovider", "-q", "tests/mpi",
                    "--timeout", "120", "--timeout-method", "thread")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert " passed" in result.stdout and " failed" not in result.stdout


def test_a_failing_rank_ends_the_job_and_names_itself():
    """Rank 2 fails in step 2 of 1,000,000: the whole job ends there (the others would need minutes
    to finish their steps, past the hang guard) and the error names the rank and the step."""
    result = mpirun(4, "examples/scientific_bsp/run.py", "--steps", "1000000", "--fail-on-rank", "2", timeout=60)
    assert result.returncode != 0
    assert "rank 2 failed in step 2" in result.stderr


def test_scientific_example_same_science_whatever_the_policy(tmp_path):
    summaries = {}
    for policy in ("round-robin", "bfio"):
        out = tmp_path / f"{policy}.json"
        result = mpirun(2, "examples/scientific_bsp/run.py", "--policy", policy, "--steps", "20", "--json", str(out))
        assert result.returncode == 0, result.stderr[-3000:]
        summaries[policy] = json.loads(out.read_text())
    for summary in summaries.values():
        assert {"policy", "ranks", "steps", "compute_s", "barrier_wait_s", "wall_s", "conserved",
                "state_digest"} <= set(summary)
        assert summary["mass_error"] < 1e-12 and summary["ranks"] == 2
    assert summaries["bfio"]["state_digest"] == summaries["round-robin"]["state_digest"]
    assert summaries["bfio"]["conserved"] == pytest.approx(summaries["round-robin"]["conserved"], rel=1e-12)


@pytest.mark.parametrize("scenario, where", [("leave-early", "the barrier"), ("stuck", "the barrier"),
                                             ("spec-exchange", "the load exchange")])
def test_a_rank_that_leaves_early_or_stops_answering_ends_the_job_with_a_clear_error(scenario, where):
    """Every collective has a deadline (timeout_s=3 here): the job ends, it does not hang."""
    result = mpirun(2, "tests/mpi/faults.py", scenario, "--timeout-s", "3", timeout=90)
    assert result.returncode != 0
    assert f"barrierlb: rank 0 waited 3 s in {where}" in result.stderr, result.stderr[-3000:]
    assert "left the loop early, or is stuck" in result.stderr


def test_placements_with_a_cost_model_are_the_same_in_every_run(tmp_path):
    digests = set()
    for run in range(3):
        out = tmp_path / f"run{run}.json"
        result = mpirun(2, "examples/scientific_bsp/run.py", "--steps", "12", "--cost", "model", "--json", str(out))
        assert result.returncode == 0, result.stderr[-3000:]
        digests.add(json.loads(out.read_text())["placement_digest"])
    assert len(digests) == 1
