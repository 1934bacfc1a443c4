"""Helpers shared by the benchmarks: timing percentiles, tables, JSON output, data paths."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from barrierlb.cli import plain_table

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


def write_json(path: str | None, payload) -> None:
    if path:
        Path(path).write_text(json.dumps(payload, indent=2) + "\n")
        print(f"wrote {path}")
