"""Request workloads: the paper's synthetic generator and loaders for real traces.

A :class:`Workload` is a sequence of requests (prompt tokens, output tokens and,
for timed traces, arrival times). Specs accepted by :func:`load_workload`:

``synthetic``
    The paper's generator: prompt ~ N(3200, 2600), output ~ N(1200, 700),
    correlation -0.1, redrawn until both are positive, rounded to tokens.
``burstgpt:PATH``
    BurstGPT as JSON (``{"data": [{"input_length", "output_length"}, ...]}``, the
    sample format in ``../shared/data``) or BurstGPT's CSV (columns
    ``Timestamp``, ``Request tokens``, ``Response tokens``; timestamps in s).
``azure:PATH``
    Azure LLM inference trace 2023: CSV ``TIMESTAMP,ContextTokens,GeneratedTokens``.
``mooncake:PATH``
    Mooncake JSONL: ``timestamp`` (ms), ``input_length``, ``output_length``.
``csv:PATH``
    CSV with ``input_length,output_length`` and optional ``timestamp`` (s).

A row that cannot be read raises :class:`WorkloadError` naming the file and line.
Requests that generate zero tokens (failed requests in BurstGPT) still take one
decode step; :attr:`Workload.zero_output_rows` counts them, nothing is dropped.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from barrierlb._validate import check_int


class WorkloadError(ValueError):
    """A workload spec or trace file that cannot be read."""


@dataclass(frozen=True)
class Workload:
    """Requests in arrival order.

    Attributes
    ----------
    name : str
    prompt_tokens : ndarray of int64, shape (n,)
    output_tokens : ndarray of int64, shape (n,), each >= 1
    arrival_s : ndarray of float64, shape (n,), or None
        Arrival times from the trace start, non-decreasing; ``None`` when the
        trace has no timestamps.
    zero_output_rows : int
        Rows whose output was 0 tokens, run as 1 decode step.
    """

    name: str
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    arrival_s: np.ndarray | None = None
    zero_output_rows: int = 0

    def __len__(self) -> int:
        return int(self.prompt_tokens.size)

    def take(self, n_requests: int, *, seed: int = 0) -> Workload:
        """``n_requests`` requests from this workload.

        The first ``n_requests`` rows when the trace is long enough. A shorter
        trace is repeated: timed traces back to back (each copy shifted by the
        trace's span), untimed ones by seeded sampling with replacement.
        """
        n_requests = check_int("n_requests", n_requests, minimum=1)
        n = len(self)
        if n_requests <= n:
            index = np.arange(n_requests)
            arrival = None if self.arrival_s is None else self.arrival_s[:n_requests]
        elif self.arrival_s is None:
            index = np.random.default_rng(seed).integers(0, n, size=n_requests)
            arrival = None
        else:
            index = np.arange(n_requests) % n
            span = float(self.arrival_s[-1] - self.arrival_s[0]) + (
                float(np.mean(np.diff(self.arrival_s))) if n > 1 else 1.0)
            arrival = self.arrival_s[index] + span * (np.arange(n_requests) // n)
        return Workload(self.name, self.prompt_tokens[index], self.output_tokens[index], arrival,
                        self.zero_output_rows)


def synthetic(n_requests: int, *, seed: int = 0, prompt_mean: float = 3200.0, prompt_std: float = 2600.0,
              output_mean: float = 1200.0, output_std: float = 700.0, correlation: float = -0.1) -> Workload:
    """The paper's synthetic workload (DESIGN.md section 4), seeded.

    Pairs are drawn from a bivariate normal and redrawn until both are positive.
    """
    n_requests = check_int("n_requests", n_requests, minimum=1)
    if not -1.0 <= correlation <= 1.0:
        raise ValueError(f"correlation must be in [-1, 1], got {correlation}")
    rng = np.random.default_rng(seed)
    cov = [[prompt_std**2, correlation * prompt_std * output_std],
           [correlation * prompt_std * output_std, output_std**2]]
    kept = np.zeros((0, 2))
    while kept.shape[0] < n_requests:
        draw = rng.multivariate_normal([prompt_mean, output_mean], cov, size=2 * n_requests)
        draw = np.rint(draw)
        kept = np.concatenate([kept, draw[(draw[:, 0] >= 1) & (draw[:, 1] >= 1)]])
    kept = kept[:n_requests].astype(np.int64)
    return Workload("synthetic", kept[:, 0], kept[:, 1])


def load_workload(spec: str, *, n_requests: int | None = None, seed: int = 0) -> Workload:
    """Load a workload from a spec (see the module docstring).

    Parameters
    ----------
    spec : str
        ``synthetic`` or ``KIND:PATH``.
    n_requests : int, optional
        Number of requests (see :meth:`Workload.take`); default: the whole trace,
        or 20,000 for ``synthetic``.
    seed : int
    """
    if not isinstance(spec, str) or not spec:
        raise WorkloadError(f"workload spec must be a non-empty string, got {spec!r}")
    kind, _, path = spec.partition(":")
    if kind == "synthetic":
        return synthetic(20_000 if n_requests is None else n_requests, seed=seed)
    loaders = {"burstgpt": _load_burstgpt, "azure": _load_azure, "mooncake": _load_mooncake, "csv": _load_csv}
    if kind not in loaders:
        raise WorkloadError(f"unknown workload kind {kind!r} in {spec!r}; "
                            f"use synthetic, {', '.join(f'{k}:PATH' for k in loaders)}")
    if not path:
        raise WorkloadError(f"workload {spec!r} needs a path: {kind}:PATH")
    file = Path(path)
    if not file.is_file():
        raise WorkloadError(f"workload file not found: {path}")
    workload = loaders[kind](file)
    if len(workload) == 0:
        raise WorkloadError(f"{path}: no requests in file")
    return workload if n_requests is None else workload.take(n_requests, seed=seed)


def _tokens(value, what: str, where: str) -> int:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise WorkloadError(f"{where}: {what} is not a number: {value!r}") from None
    if not math.isfinite(number) or number < 0 or number != int(number):
        raise WorkloadError(f"{where}: {what} must be a non-negative integer, got {value!r}")
    return int(number)


def _build(name: str, rows: list[tuple], where_first: str, timed: bool) -> Workload:
    prompt = np.array([r[0] for r in rows], dtype=np.int64)
    output = np.array([r[1] for r in rows], dtype=np.int64)
    zero = int((output == 0).sum())
    output = np.maximum(output, 1)
    arrival = None
    if timed:
        times = np.array([r[2] for r in rows], dtype=np.float64)
        order = np.argsort(times, kind="stable")
        prompt, output, times = prompt[order], output[order], times[order]
        arrival = times - times[0] if times.size else times
    return Workload(name, prompt, output, arrival, zero)


def _read_csv(file: Path, required: list[str], optional: list[str] = ()):
    with file.open(newline="") as handle:
        reader = csv.reader(handle)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            raise WorkloadError(f"{file}: empty file") from None
        missing = [c for c in required if c not in header]
        if missing:
            raise WorkloadError(f"{file}:1: missing column(s) {', '.join(missing)}; header is {header}")
        column = {c: header.index(c) for c in list(required) + [c for c in optional if c in header]}
        for line, row in enumerate(reader, start=2):
            if not row or all(not cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                raise WorkloadError(f"{file}:{line}: expected {len(header)} fields, got {len(row)}")
            yield f"{file}:{line}", {c: row[i].strip() for c, i in column.items()}


def _load_burstgpt(file: Path) -> Workload:
    if file.suffix.lower() == ".json":
        try:
            data = json.loads(file.read_text())
        except json.JSONDecodeError as error:
            raise WorkloadError(f"{file}:{error.lineno}: invalid JSON: {error.msg}") from None
        items = data.get("data") if isinstance(data, dict) else data
        if not isinstance(items, list):
            raise WorkloadError(f"{file}: expected a JSON object with a 'data' list")
        rows = []
        for k, item in enumerate(items):
            where = f"{file}: data[{k}]"
            if not isinstance(item, dict) or "input_length" not in item or "output_length" not in item:
                raise WorkloadError(f"{where}: needs input_length and output_length")
            rows.append((_tokens(item["input_length"], "input_length", where),
                         _tokens(item["output_length"], "output_length", where)))
        return _build(f"burstgpt:{file.name}", rows, str(file), timed=False)
    rows = []
    for where, row in _read_csv(file, ["Timestamp", "Request tokens", "Response tokens"]):
        rows.append((_tokens(row["Request tokens"], "Request tokens", where),
                     _tokens(row["Response tokens"], "Response tokens", where),
                     _seconds(row["Timestamp"], where)))
    return _build(f"burstgpt:{file.name}", rows, str(file), timed=True)


def _seconds(value: str, where: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise WorkloadError(f"{where}: timestamp is not a number: {value!r}") from None
    if not math.isfinite(number):
        raise WorkloadError(f"{where}: timestamp must be finite, got {value!r}")
    return number


def _load_azure(file: Path) -> Workload:
    rows = []
    for where, row in _read_csv(file, ["TIMESTAMP", "ContextTokens", "GeneratedTokens"]):
        try:
            stamp = np.datetime64(row["TIMESTAMP"].replace(" ", "T"), "ns")
        except ValueError:
            raise WorkloadError(f"{where}: TIMESTAMP is not a date-time: {row['TIMESTAMP']!r}") from None
        rows.append((_tokens(row["ContextTokens"], "ContextTokens", where),
                     _tokens(row["GeneratedTokens"], "GeneratedTokens", where),
                     stamp.astype(np.int64) / 1e9))
    return _build(f"azure:{file.name}", rows, str(file), timed=True)


def _load_mooncake(file: Path) -> Workload:
    rows = []
    with file.open() as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{file}:{line_no}"
            try:
                item = json.loads(line)
            except json.JSONDecodeError as error:
                raise WorkloadError(f"{where}: invalid JSON: {error.msg}") from None
            if not isinstance(item, dict):
                raise WorkloadError(f"{where}: expected a JSON object")
            for key in ("timestamp", "input_length", "output_length"):
                if key not in item:
                    raise WorkloadError(f"{where}: missing {key}")
            rows.append((_tokens(item["input_length"], "input_length", where),
                         _tokens(item["output_length"], "output_length", where),
                         _seconds(str(item["timestamp"]), where) / 1000.0))
    return _build(f"mooncake:{file.name}", rows, str(file), timed=True)


def _load_csv(file: Path) -> Workload:
    rows, timed = [], None
    for where, row in _read_csv(file, ["input_length", "output_length"], ["timestamp"]):
        timed = "timestamp" in row if timed is None else timed
        rows.append((_tokens(row["input_length"], "input_length", where),
                     _tokens(row["output_length"], "output_length", where))
                    + ((_seconds(row["timestamp"], where),) if timed else ()))
    return _build(f"csv:{file.name}", rows, str(file), timed=bool(timed))
