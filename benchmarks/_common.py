"""Helpers shared by the benchmarks: timing percentiles, tables, JSON output, data paths."""

from __future__ import annotations

import functools
import json
import os
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import numpy as np

from barrierlb.cli import plain_table
from barrierlb.outputs import finite, output_file

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


def percentiles_ms(seconds) -> tuple[float, float]:
    values = np.asarray(seconds) * 1e3
    return float(np.percentile(values, 50)), float(np.percentile(values, 99))


def timed(fn, *args, **kwargs):
    started = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - started


def print_table(rows: list[dict], columns: list[tuple], title: str) -> None:
    """Plain fixed-width table: ``columns`` are (key, header, format string or callable)."""
    def cell(value, fmt):
        return "-" if value is None else fmt(value) if callable(fmt) else fmt.format(value)
    cells = [[cell(row.get(key), fmt) for key, _, fmt in columns] for row in rows]
    print(title)
    print(plain_table([header for _, header, _ in columns], cells))
    print(flush=True)


#: Libraries whose versions each JSON record names (those installed).
LIBRARIES = ("barrierlb", "numpy", "scipy", "numba", "mpi4py", "dask", "distributed", "cupy", "cupy-cuda12x",
             "cupy-cuda13x")


@functools.lru_cache(maxsize=1)
def environment() -> dict:
    """Where a measurement ran: the commit (``-dirty`` with local changes), the CPU, cores,
    Python and the versions of the libraries in :data:`LIBRARIES` that are installed."""
    def git(*args):
        try:
            out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit and git("status", "--porcelain", "--untracked-files=no"):
        commit += "-dirty"
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return {"commit": commit, "cpu": _cpu_model(), "cpu_count": os.cpu_count(), "machine": platform.machine(),
            "python": platform.python_version(), "libraries": versions, "argv": sys.argv[1:]}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def add_json_argument(parser, help: str = "write the records as JSON") -> None:
    """``--json PATH`` and ``--force``: an existing PATH is refused before the run (:func:`check_json_argument`)."""
    parser.add_argument("--json", metavar="PATH", help=f"{help} (refused if PATH exists, unless --force)")
    parser.add_argument("--force", action="store_true", help="overwrite an existing --json file")


def check_json_argument(parser, args) -> None:
    """Refuse, before any measurement, a ``--json`` file that exists (without ``--force``)."""
    if args.json and Path(args.json).exists() and not args.force:
        parser.error(f"--json {args.json} already exists; give --force to overwrite it, or another path")


def write_json(path: str | None, payload, *, force: bool = False) -> None:
    """Write ``payload`` (a list of records, or a dict of such lists) as standard JSON (a metric
    that is not a finite number as ``null``); every record gets an ``environment`` key
    (:func:`environment`).

    Without ``force`` an existing file is never overwritten: one that appeared during the run
    (:func:`check_json_argument` refused it before) leaves the records in ``PATH.1`` (``.2``, ...)
    beside it, and says so."""
    if not path:
        return
    env = environment()
    lists = payload.values() if isinstance(payload, dict) else [payload]
    for records in lists:
        for record in records if isinstance(records, list) else ():
            if isinstance(record, dict):
                record.setdefault("environment", env)
    with output_file(path, force=force) as out:
        out.partial.write_text(json.dumps(finite(payload), indent=2, default=str, allow_nan=False) + "\n")
    print(out.note())
