"""Runs the MPI test suite and the MPI example under a real ``mpiexec`` from the plain pytest run."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MPIEXEC = shutil.which("mpiexec", path=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""))
pytestmark = pytest.mark.skipif(MPIEXEC is None, reason="no mpiexec: pip install 'barrierlb[mpi,mpi-runtime]'")


def mpirun(n, *args, timeout=240):
    cmd = [MPIEXEC, "-n", str(n), sys.executable, "-m", "mpi4py", *args]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


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
