"""Request workloads: the paper's synthetic generator and loaders for real traces.

A :class:`Workload` is a sequence of requests (prompt tokens, output tokens and,
for timed traces, arrival times). Specs accepted by :func:`load_workload`:

``synthetic[:PARAMS]``
    The paper's generator: prompt ~ N(3200, 2600), output ~ N(1200, 700),
    correlation -0.1, redrawn until both are positive, rounded to tokens.
    Parameters (``synthetic:prompt_mean=800,output_std=90``): ``prompt_mean``,
    ``prompt_std``, ``output_mean``, ``output_std``, ``corr``; see
    :func:`synthetic`.
``long-context[:PARAMS]``
    Long prompts with a heavy tail (RAG, agents, long chats): log-normal
    prompts of median 7,000 tokens, normal outputs; see :func:`long_context`
    for the parameters.
``burstgpt:PATH``
    BurstGPT as JSON (``{"data": [{"input_length", "output_length"}, ...]}``, the
    format of an 8,000-request sample) or BurstGPT's CSV (columns
    ``Timestamp``, ``Request tokens``, ``Response tokens``; timestamps in s).
``azure:PATH``
    Azure LLM inference trace 2023: CSV ``TIMESTAMP,ContextTokens,GeneratedTokens``.
``mooncake:PATH``
    Mooncake JSONL: ``timestamp`` (ms), ``input_length``, ``output_length``.
``csv:PATH``
    CSV with ``input_length,output_length`` and optional ``timestamp`` (s).

A row that cannot be read raises :class:`WorkloadError` naming the file and line,
as do a file that is not UTF-8 text, a CSV field over 128 KiB and a token count
over :data:`MAX_TOKENS`. Files are read as streams into compact arrays (16 bytes
a request, 24 with a timestamp); an untimed trace is read only up to the
``n_requests`` rows asked for. Requests that generate zero tokens (failed
requests in BurstGPT) still take one decode step;
:attr:`Workload.zero_output_rows` counts them, nothing is dropped.
"""

from __future__ import annotations

import csv
import json
import math
from array import array
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from barrierlb._validate import check_array, check_int, check_real

#: Most requests one workload may hold (``n_requests``, ``--requests``): about
#: 1 GB of simulator state, hours of simulation. Larger traces are read in part.
MAX_REQUESTS = 10_000_000

#: Largest token count accepted (2**53 - 1: loads are float64, exact up to here).
MAX_TOKENS = 2**53 - 1

#: Default size of the generated workloads.
DEFAULT_GENERATED_REQUESTS = 20_000


class WorkloadError(ValueError):
    """A workload spec or trace file that cannot be read."""


def _check_requests(n_requests) -> int:
    n_requests = check_int("n_requests", n_requests, minimum=1)
    if n_requests > MAX_REQUESTS:
        raise ValueError(f"n_requests must be <= {MAX_REQUESTS:,} (MAX_REQUESTS), got {n_requests:,}")
    return n_requests


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
        Requests whose output was 0 tokens, run as 1 decode step.
    zero_output_index : ndarray of int64, or None
        Their positions, ascending (kept so that :meth:`take` counts the ones it
        takes); ``None`` when no row was read with 0 output tokens.
    """

    name: str
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    arrival_s: np.ndarray | None = None
    zero_output_rows: int = 0
    zero_output_index: np.ndarray | None = None

    def __post_init__(self) -> None:
        """Check the fields as documented above (``ValueError``/``TypeError`` naming the field):
        integral token counts (``2.7`` is an error, not 2), of one length, outputs of at least one
        token, arrival times finite and non-decreasing."""
        prompt = check_array("prompt_tokens", self.prompt_tokens, ndim=1, nonnegative=True, dtype=np.int64)
        output = check_array("output_tokens", self.output_tokens, shape=prompt.shape, dtype=np.int64)
        if output.size and output.min() < 1:
            raise ValueError(f"output_tokens must be >= 1 (a request decodes at least one token), "
                             f"got {output.min()}")
        object.__setattr__(self, "prompt_tokens", prompt)
        object.__setattr__(self, "output_tokens", output)
        if self.arrival_s is not None:
            arrival = check_array("arrival_s", self.arrival_s, shape=prompt.shape)
            for start in range(0, arrival.size - 1, 1 << 20):     # in chunks: a loaded trace's peak memory
                part = arrival[start:start + (1 << 20) + 1]
                if (part[1:] < part[:-1]).any():
                    k = start + int(np.flatnonzero(part[1:] < part[:-1])[0])
                    raise ValueError(f"arrival_s must be non-decreasing, got {arrival[k]} then {arrival[k + 1]} "
                                     f"at requests {k} and {k + 1}")
            object.__setattr__(self, "arrival_s", arrival)
        check_int("zero_output_rows", self.zero_output_rows, minimum=0, maximum=prompt.size)

    def __len__(self) -> int:
        return int(self.prompt_tokens.size)

    def take(self, n_requests: int, *, seed: int = 0) -> Workload:
        """``n_requests`` requests from this workload (at most :data:`MAX_REQUESTS`).

        The first ``n_requests`` rows when the trace is long enough. A shorter
        trace is repeated: timed traces back to back, in their order (each copy
        shifted by the trace's span, so arrivals stay non-decreasing; the seed
        plays no part), untimed ones by seeded sampling with replacement.
        """
        n_requests = _check_requests(n_requests)
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
        zero = None
        if self.zero_output_index is not None:
            zero = np.flatnonzero(np.isin(index, self.zero_output_index))
        return Workload(self.name, self.prompt_tokens[index], self.output_tokens[index], arrival,
                        0 if zero is None else int(zero.size), zero if zero is not None and zero.size else None)


def synthetic(n_requests: int, *, seed: int = 0, prompt_mean: float = 3200.0, prompt_std: float = 2600.0,
              output_mean: float = 1200.0, output_std: float = 700.0, correlation: float = -0.1) -> Workload:
    """The paper's synthetic workload (its evaluation setup: Chen et al., arXiv 2601.17855), seeded.

    Pairs are drawn from a bivariate normal (means, standard deviations and
    ``correlation`` of prompt and output tokens) and redrawn until both round
    to at least one token. Parameters under which fewer than 1 draw in 100
    is kept raise ``ValueError`` instead of drawing for ever.

    Examples
    --------
    >>> w = synthetic(1000, seed=1, prompt_mean=500, prompt_std=100, output_mean=50, output_std=10)
    >>> len(w), bool((w.output_tokens >= 1).all())
    (1000, True)
    """
    n_requests = _check_requests(n_requests)
    for name, value in (("prompt_mean", prompt_mean), ("output_mean", output_mean)):
        check_real(name, value, minimum=-MAX_TOKENS, maximum=MAX_TOKENS)
    for name, value in (("prompt_std", prompt_std), ("output_std", output_std)):
        check_real(name, value, minimum=0.0, maximum=MAX_TOKENS)
    check_real("correlation", correlation, minimum=-1.0, maximum=1.0)
    rng = np.random.default_rng(seed)
    cov = [[prompt_std**2, correlation * prompt_std * output_std],
           [correlation * prompt_std * output_std, output_std**2]]
    kept = np.empty((n_requests, 2), dtype=np.int64)
    filled = drawn = 0
    # Chunks of 2n draws (at most a million rows at once, to bound memory) read the
    # generator's stream in the same order as one large draw would.
    chunk = min(2 * n_requests, 1_000_000)
    while filled < n_requests:
        if drawn > 100 * n_requests + 100_000:
            raise ValueError(f"synthetic: only {filled:,} of {drawn:,} draws had prompt and output of at least "
                             f"one token (prompt_mean={prompt_mean}, prompt_std={prompt_std}, "
                             f"output_mean={output_mean}, output_std={output_std}, correlation={correlation})")
        draw = np.rint(rng.multivariate_normal([prompt_mean, output_mean], cov, size=chunk))
        drawn += chunk
        good = draw[(draw[:, 0] >= 1) & (draw[:, 1] >= 1)][: n_requests - filled]
        if good.size and good.max() > MAX_TOKENS:
            raise ValueError(f"synthetic: a draw exceeds MAX_TOKENS ({MAX_TOKENS}); lower the means or deviations")
        kept[filled:filled + good.shape[0]] = good
        filled += good.shape[0]
    return Workload("synthetic", kept[:, 0].copy(), kept[:, 1].copy())


def long_context(n_requests: int, *, seed: int = 0, prompt_median: float = 7000.0, prompt_sigma: float = 1.0,
                 prompt_min: int = 16, prompt_max: int = 131072, output_mean: float = 350.0,
                 output_std: float = 250.0, output_min: int = 1, output_max: int = 2000) -> Workload:
    """Long-context chat: log-normal prompts with a heavy tail, normal outputs, seeded.

    ``rng = np.random.default_rng(seed)``; prompts
    ``clip(rint(rng.lognormal(log(prompt_median), prompt_sigma, n)), prompt_min, prompt_max)``,
    then outputs ``clip(rint(rng.normal(output_mean, output_std, n)), output_min, output_max)``.
    The defaults are issue 15's recipe (median prompt 7,000 tokens, 1% over about
    72,000; outputs 350 +- 250 tokens, 1 to 2,000).

    Examples
    --------
    >>> w = long_context(20000, seed=0)
    >>> int(w.prompt_tokens.min()) >= 16, int(w.output_tokens.max()) <= 2000
    (True, True)
    """
    n_requests = _check_requests(n_requests)
    check_real("prompt_median", prompt_median, minimum=1.0, maximum=MAX_TOKENS)
    check_real("prompt_sigma", prompt_sigma, minimum=0.0)
    check_real("output_mean", output_mean)
    check_real("output_std", output_std, minimum=0.0)
    bounds = {name: check_int(name, value, minimum=1, maximum=MAX_TOKENS) for name, value in (
        ("prompt_min", prompt_min), ("prompt_max", prompt_max), ("output_min", output_min), ("output_max", output_max))}
    for low, high in (("prompt_min", "prompt_max"), ("output_min", "output_max")):
        if bounds[low] > bounds[high]:
            raise ValueError(f"{low} ({bounds[low]}) must be <= {high} ({bounds[high]})")
    rng = np.random.default_rng(seed)
    prompt = np.clip(np.rint(rng.lognormal(np.log(prompt_median), prompt_sigma, n_requests)),
                     bounds["prompt_min"], bounds["prompt_max"])
    output = np.clip(np.rint(rng.normal(output_mean, output_std, n_requests)),
                     bounds["output_min"], bounds["output_max"])
    return Workload("long-context", prompt.astype(np.int64), output.astype(np.int64))


# Spec name -> (generator, {spec parameter: keyword}); parameters parse as numbers.
_GENERATORS = {
    "synthetic": (synthetic, {"prompt_mean": "prompt_mean", "prompt_std": "prompt_std",
                              "output_mean": "output_mean", "output_std": "output_std", "corr": "correlation"}),
    "long-context": (long_context, {name: name for name in (
        "prompt_median", "prompt_sigma", "prompt_min", "prompt_max", "output_mean", "output_std", "output_min",
        "output_max")}),
}
_INTEGER_PARAMETERS = {"prompt_min", "prompt_max", "output_min", "output_max"}


def _generator_parameters(kind: str, text: str, spec: str) -> dict:
    """``"a=1,b=2"`` -> keywords of the generator ``kind``, or WorkloadError naming the bad part."""
    known = _GENERATORS[kind][1]
    keywords: dict = {}
    for part in text.split(","):
        key, equals, value = (piece.strip() for piece in part.partition("="))
        if not equals or not key or not value:
            raise WorkloadError(f"malformed parameter {part.strip()!r} in workload {spec!r}: expected key=value "
                                f"(known: {', '.join(known)})")
        if key not in known:
            raise WorkloadError(f"unknown parameter {key!r} of workload {kind!r} in {spec!r}; "
                                f"known: {', '.join(known)}")
        if known[key] in keywords:
            raise WorkloadError(f"parameter {key!r} given twice in workload {spec!r}")
        try:
            number = float(value)
        except ValueError:
            raise WorkloadError(f"parameter {key} of workload {kind!r} must be a number, got {value!r}") from None
        if key in _INTEGER_PARAMETERS:
            if not math.isfinite(number) or number != int(number):
                raise WorkloadError(f"parameter {key} of workload {kind!r} must be an integer, got {value!r}")
            number = int(number)
        keywords[known[key]] = number
    return keywords


def load_workload(spec: str, *, n_requests: int | None = None, seed: int = 0) -> Workload:
    """Load a workload from a spec (see the module docstring).

    Parameters
    ----------
    spec : str
        ``synthetic``, ``long-context`` (each optionally ``:key=value,...``) or ``KIND:PATH``.
    n_requests : int, optional
        Number of requests, at most :data:`MAX_REQUESTS` (see :meth:`Workload.take`);
        default: the whole trace, or 20,000 for the generators.
    seed : int

    Raises
    ------
    WorkloadError
        A spec, parameter, path or row that cannot be read, naming it.
    """
    if not isinstance(spec, str) or not spec:
        raise WorkloadError(f"workload spec must be a non-empty string, got {spec!r}")
    if n_requests is not None:
        try:
            n_requests = _check_requests(n_requests)
        except ValueError as error:
            raise WorkloadError(str(error)) from None
    kind, colon, path = spec.partition(":")
    if kind in _GENERATORS:
        keywords = _generator_parameters(kind, path, spec) if colon else {}
        generate = _GENERATORS[kind][0]
        try:
            workload = generate(DEFAULT_GENERATED_REQUESTS if n_requests is None else n_requests, seed=seed,
                                **keywords)
        except ValueError as error:
            raise WorkloadError(f"workload {spec!r}: {error}") from None
        return workload if not keywords else Workload(spec, workload.prompt_tokens, workload.output_tokens)
    loaders = {"burstgpt": _load_burstgpt, "azure": _load_azure, "mooncake": _load_mooncake, "csv": _load_csv}
    if kind not in loaders:
        raise WorkloadError(f"unknown workload kind {kind!r} in {spec!r}; use "
                            f"{', '.join(f'{k}[:PARAMS]' for k in _GENERATORS)}, "
                            f"{', '.join(f'{k}:PATH' for k in loaders)}")
    if not path:
        raise WorkloadError(f"workload {spec!r} needs a path: {kind}:PATH")
    file = Path(path)
    if file.is_dir():
        raise WorkloadError(f"workload path is a directory, not a file: {path}")
    if not file.exists():
        raise WorkloadError(f"workload file not found: {path}")
    if not file.is_file():
        raise WorkloadError(f"workload path is not a regular file: {path}")
    workload = loaders[kind](file, n_requests)
    if len(workload) == 0:
        raise WorkloadError(f"{path}: no requests in file")
    return workload if n_requests is None else workload.take(n_requests, seed=seed)


def trace_path(spec: str) -> Path | None:
    """The file a workload spec reads (``KIND:PATH``), or None for the generators."""
    kind, _, path = spec.partition(":") if isinstance(spec, str) else ("", "", "")
    return None if kind in _GENERATORS or not path else Path(path)


def _tokens(value, what: str, where: str) -> int:
    """A token count from a trace field: a non-negative integer up to MAX_TOKENS, never rounded."""
    if isinstance(value, bool):
        raise WorkloadError(f"{where}: {what} is not a number: {value!r}")
    try:
        number = value if isinstance(value, int) else \
            int(value) if isinstance(value, str) and value.strip().lstrip("+-").isdigit() else float(value)
    except (TypeError, ValueError):
        raise WorkloadError(f"{where}: {what} is not a number: {value!r}") from None
    if isinstance(number, float):
        if not number.is_integer():           # also NaN and infinities
            raise WorkloadError(f"{where}: {what} must be a non-negative integer, got {value!r}")
        number = int(number)
    if number < 0:
        raise WorkloadError(f"{where}: {what} must be a non-negative integer, got {value!r}")
    if number > MAX_TOKENS:
        raise WorkloadError(f"{where}: {what} is {value!r}, over the {MAX_TOKENS:,} tokens a load can hold "
                            f"exactly (MAX_TOKENS)")
    return number


class _Rows:
    """Rows of a trace in typed arrays (8 bytes a value, not a Python tuple a row).

    ``limit`` (untimed traces only) stops the reading at the rows needed; a timed
    trace is read whole, since it is sorted by time afterwards.
    """

    def __init__(self, timed: bool, limit: int | None):
        self.prompt, self.output = array("q"), array("q")
        self.time = array("d") if timed else None
        self.limit = None if timed else limit

    def add(self, prompt: int, output: int, time_s: float | None = None) -> bool:
        """Append one row; False once ``limit`` rows are held."""
        self.prompt.append(prompt)
        self.output.append(output)
        if self.time is not None:
            self.time.append(time_s)
        return self.limit is None or len(self.prompt) < self.limit

    def workload(self, name: str) -> Workload:
        prompt, output = np.frombuffer(self.prompt, dtype=np.int64), np.frombuffer(self.output, dtype=np.int64)
        arrival = None
        if self.time is not None:
            times = np.frombuffer(self.time, dtype=np.float64)
            order = np.argsort(times, kind="stable")
            prompt, output, times = prompt[order], output[order], times[order]
            arrival = times - times[0] if times.size else times
        zero = np.flatnonzero(output == 0)
        output = np.maximum(output, 1)
        return Workload(name, prompt, output, arrival, int(zero.size), zero if zero.size else None)


def _not_text(file: Path, error: UnicodeDecodeError) -> WorkloadError:
    bad = error.object[error.start:error.start + 1].hex()
    return WorkloadError(f"{file}: not UTF-8 text (byte 0x{bad} cannot be decoded): a binary file?")


def _read_csv(file: Path, required: list[str], optional: list[str] = ()):
    """Yield ``(where, {column: text})`` per data row; every failure is a WorkloadError with file and line."""
    with file.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        try:
            try:
                header = [h.strip() for h in next(reader)]
            except StopIteration:
                raise WorkloadError(f"{file}: empty file") from None
            missing = [c for c in required if c not in header]
            if missing:
                raise WorkloadError(f"{file}:1: missing column(s) {', '.join(missing)}; header is {header}")
            column = {c: header.index(c) for c in list(required) + [c for c in optional if c in header]}
            for row in reader:
                if not row or all(not cell.strip() for cell in row):
                    continue
                if len(row) != len(header):
                    raise WorkloadError(f"{file}:{reader.line_num}: expected {len(header)} fields, got {len(row)}")
                yield f"{file}:{reader.line_num}", {c: row[i].strip() for c, i in column.items()}
        except UnicodeDecodeError as error:
            raise _not_text(file, error) from None
        except csv.Error as error:
            if "field larger than field limit" in str(error):
                raise WorkloadError(f"{file}:{reader.line_num}: a field is longer than "
                                    f"{csv.field_size_limit():,} characters; not a trace of token counts?") from None
            raise WorkloadError(f"{file}:{reader.line_num}: unreadable CSV: {error}") from None


def _json_requests(file: Path, limit: int | None):
    """Yield ``(index, {field: scalar})`` for the request objects of a BurstGPT JSON file, streaming.

    The file is ``{"data": [ {...}, ... ], ...}`` or a bare list; reading stops at
    ``limit`` requests. Nested values inside a request are replaced by ``[...]``
    (never a token count). ijson parses incrementally and without recursion, so
    neither the file's size nor its nesting depth decides the memory used.
    """
    import ijson

    with file.open("rb") as handle:
        events = ijson.basic_parse(handle, use_float=True)
        try:
            first, _ = next(events, (None, None))
            if first == "start_map":
                for event, value in events:         # only keys and the end at this level
                    if event == "end_map":
                        raise WorkloadError(f"{file}: expected a JSON object with a 'data' list")
                    if event == "map_key" and value == "data":
                        break
                    _skip_value(events)
                first, _ = next(events, (None, None))
            if first != "start_array":
                raise WorkloadError(f"{file}: expected a JSON object with a 'data' list")
            index = 0
            for event, value in events:
                if event == "end_array" or (limit is not None and index >= limit):
                    return
                if event != "start_map":
                    got = "a list" if event == "start_array" else repr(value)
                    raise WorkloadError(f"{file}: data[{index}]: expected an object with input_length and "
                                        f"output_length, got {got}")
                item = {}
                for event, key in events:
                    if event == "end_map":
                        break
                    event, value = next(events)
                    if event in ("start_map", "start_array"):
                        _skip_value(events, depth=1)
                        value = [...]
                    item[key] = value
                yield index, item
                index += 1
        except ijson.JSONError as error:
            raise WorkloadError(f"{file}: invalid JSON: {error}") from None


def _skip_value(events, depth: int = 0) -> None:
    """Consume one JSON value's events (``depth`` containers already open), iteratively."""
    for event, _ in events:
        if event in ("start_map", "start_array"):
            depth += 1
        elif event in ("end_map", "end_array"):
            depth -= 1
        if depth <= 0:
            return


def _load_burstgpt(file: Path, limit: int | None) -> Workload:
    if file.suffix.lower() == ".json":
        rows = _Rows(timed=False, limit=limit)
        for k, item in _json_requests(file, limit):
            prompt, output = item.get("input_length"), item.get("output_length")
            # Plain integers in range take the fast path; anything else gets the checks and their messages.
            if not (type(prompt) is int and type(output) is int and 0 <= prompt <= MAX_TOKENS
                    and 0 <= output <= MAX_TOKENS):
                where = f"{file}: data[{k}]"
                if "input_length" not in item or "output_length" not in item:
                    raise WorkloadError(f"{where}: needs input_length and output_length")
                prompt = _tokens(prompt, "input_length", where)
                output = _tokens(output, "output_length", where)
            rows.add(prompt, output)
        return rows.workload(f"burstgpt:{file.name}")
    return _timed_csv(file, limit, "burstgpt", ("Request tokens", "Response tokens", "Timestamp"), _seconds)


def _timed_csv(file: Path, limit: int | None, kind: str, columns: tuple[str, str, str], seconds) -> Workload:
    """A CSV trace with a prompt, an output and an arrival-time column (``seconds(text, where)``)."""
    prompt, output, when = columns
    rows = _Rows(timed=True, limit=limit)
    for where, row in _read_csv(file, [when, prompt, output]):
        rows.add(_tokens(row[prompt], prompt, where), _tokens(row[output], output, where),
                 seconds(row[when], where))
    return rows.workload(f"{kind}:{file.name}")


def _seconds(value, where: str) -> float:
    if isinstance(value, bool):
        raise WorkloadError(f"{where}: timestamp is not a number: {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        raise WorkloadError(f"{where}: timestamp is not a number: {value!r}") from None
    if not math.isfinite(number):
        raise WorkloadError(f"{where}: timestamp must be finite, got {value!r}")
    return number


def _date_time_s(text: str, where: str) -> float:
    """Seconds since 1970 of an ISO date-time (``2023-11-16 18:17:03.9799600``)."""
    # numpy wraps silently outside nanoseconds' range (years 1678 to 2261): check the year first.
    year = text.strip().split("-", 1)[0]
    if not (year.isdigit() and 1678 < int(year) < 2262):
        raise WorkloadError(f"{where}: TIMESTAMP is not a date-time between the years 1678 and 2261: {text!r}")
    try:
        return np.datetime64(text.replace(" ", "T"), "ns").astype(np.int64) / 1e9
    except (ValueError, OverflowError):
        raise WorkloadError(f"{where}: TIMESTAMP is not a date-time: {text!r}") from None


def _load_azure(file: Path, limit: int | None) -> Workload:
    return _timed_csv(file, limit, "azure", ("ContextTokens", "GeneratedTokens", "TIMESTAMP"), _date_time_s)


def _load_mooncake(file: Path, limit: int | None) -> Workload:
    rows = _Rows(timed=True, limit=limit)
    with file.open(encoding="utf-8") as handle:
        line_no = 0
        try:
            for line_no, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                where = f"{file}:{line_no}"
                try:
                    item = json.loads(line)
                except json.JSONDecodeError as error:
                    raise WorkloadError(f"{where}: invalid JSON: {error.msg}") from None
                except RecursionError:
                    raise WorkloadError(f"{where}: JSON nested too deeply") from None
                if not isinstance(item, dict):
                    raise WorkloadError(f"{where}: expected a JSON object")
                for key in ("timestamp", "input_length", "output_length"):
                    if key not in item:
                        raise WorkloadError(f"{where}: missing {key}")
                rows.add(_tokens(item["input_length"], "input_length", where),
                         _tokens(item["output_length"], "output_length", where),
                         _seconds(item["timestamp"], where) / 1000.0)
        except UnicodeDecodeError as error:
            raise _not_text(file, error) from None
    return rows.workload(f"mooncake:{file.name}")


def _load_csv(file: Path, limit: int | None) -> Workload:
    rows = None
    for where, row in _read_csv(file, ["input_length", "output_length"], ["timestamp"]):
        if rows is None:
            rows = _Rows(timed="timestamp" in row, limit=limit)
        more = rows.add(_tokens(row["input_length"], "input_length", where),
                        _tokens(row["output_length"], "output_length", where),
                        _seconds(row["timestamp"], where) if rows.time is not None else None)
        if not more:
            break
    return (rows or _Rows(timed=False, limit=None)).workload(f"csv:{file.name}")
