"""Output files written without loss: never half-written, never over a file nobody asked to replace.

Every command of the project that writes results (``barrierlb compare --json``, the
benchmarks' and the examples' ``--json``, plots, CSV dumps) refuses an existing path
before it runs, unless told to overwrite it (``--force``). A run takes minutes, and a
file can appear at the path meanwhile (another run, a user). :func:`output_file`
writes the results to a temporary file beside the path and publishes it only once the
writing has finished:

- asked to overwrite (``force=True``): moved onto the path at once (``os.replace``),
  so that a reader sees the old file or the new one, never a mix;
- otherwise: linked to the path only if nothing is there (``os.link``, which fails
  rather than replace), else to the first free ``PATH.1``, ``PATH.2``, ..., so that
  both the file that appeared and the results are kept. :attr:`Output.moved_aside`
  tells the caller, which says so.

A write that fails or is interrupted leaves neither a partial file nor a changed path.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

#: How many ``PATH.N`` names :func:`output_file` tries beside a path that appeared.
ASIDE_NAMES = 999


@dataclass
class Output:
    """A file being written by :func:`output_file`.

    Attributes
    ----------
    target : Path
        The path asked for.
    partial : Path
        The temporary file to write (beside ``target``, with its suffix, so that a
        writer that picks its format by suffix picks the right one).
    path : Path or None
        Where the results are, once the ``with`` block has finished; ``None`` before.
    """

    target: Path
    partial: Path
    path: Path | None = None

    @property
    def moved_aside(self) -> bool:
        """Whether the results went to ``PATH.N`` because ``target`` appeared during the run."""
        return self.path is not None and self.path != self.target

    def note(self) -> str:
        """``"wrote PATH"``, and when moved aside, that the file that appeared was left as it was."""
        if self.moved_aside:
            return f"wrote {self.path} ({self.target} appeared during the run; it is left as it was)"
        return f"wrote {self.path}"


@contextlib.contextmanager
def output_file(path: str | os.PathLike, *, force: bool = False) -> Iterator[Output]:
    """Yield an :class:`Output` whose ``partial`` file the block writes; publish it after.

    Parameters
    ----------
    path : str or path-like
        Where the results go.
    force : bool
        Replace a file at ``path`` (default: never; the results go to ``PATH.N`` instead).

    Raises
    ------
    FileExistsError
        ``path`` and ``PATH.1`` to ``PATH.999`` all exist (nothing is written).
    OSError
        The directory cannot be written.

    Examples
    --------
    >>> import pathlib, tempfile
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "r.json"
    >>> with output_file(target) as out:
    ...     _ = out.partial.write_text("[]")
    ...     _ = target.write_text("appeared meanwhile")
    >>> out.path.name, target.read_text(), out.path.read_text()
    ('r.json.1', 'appeared meanwhile', '[]')
    """
    target = Path(path)
    out = Output(target=target, partial=_new_partial(target))
    try:
        yield out
        out.path = _publish(out.partial, target, force)
    finally:
        out.partial.unlink(missing_ok=True)


def _new_partial(target: Path) -> Path:
    """An empty file of a fresh name beside ``target`` (created with the umask's permissions,
    as the published file should have)."""
    directory = target.resolve().parent
    for _ in range(100):
        partial = directory / f".{target.name}.{secrets.token_hex(4)}.partial{target.suffix}"
        try:
            with open(partial, "x"):
                return partial
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, f"no free temporary name beside {target}", str(target))


def _publish(partial: Path, target: Path, force: bool) -> Path:
    if force:
        os.replace(partial, target)
        return target
    for n in range(ASIDE_NAMES + 1):
        candidate = target if n == 0 else target.with_name(f"{target.name}.{n}")
        try:
            _link_new(partial, candidate)
        except FileExistsError:
            continue
        return candidate
    raise FileExistsError(errno.EEXIST, f"{target} and {target.name}.1 to .{ASIDE_NAMES} all exist; "
                                        f"the results were not written", str(target))


def _link_new(partial: Path, candidate: Path) -> None:
    """Make ``candidate`` hold ``partial``'s bytes, failing with FileExistsError if it exists."""
    try:
        os.link(partial, candidate)
    except FileExistsError:
        raise
    except OSError:
        # A filesystem without hard links: an exclusive create and a copy (not atomic for
        # readers, but it never replaces a file).
        with open(candidate, "xb") as dst, open(partial, "rb") as src:
            shutil.copyfileobj(src, dst)


def write_text(path: str | os.PathLike, text: str, *, force: bool = False) -> Output:
    """Write ``text`` to ``path`` through :func:`output_file`; the returned :class:`Output` says
    where it went (``out.note()`` for the user)."""
    with output_file(path, force=force) as out:
        out.partial.write_text(text)
    return out


def finite(value):
    """``value`` with every non-finite float (NaN, infinity), at any depth of dicts, lists and
    tuples, replaced by ``None``: JSON has no such numbers, and ``json.dumps`` would write
    ``NaN``, which strict parsers (jq, JavaScript) refuse; ``null`` every parser reads."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(item) for item in value]
    return value


def refuse_existing(parser, outputs: dict) -> None:
    """Stop an ``argparse`` command before it runs when an output it would write exists:
    ``outputs`` maps each flag to its path (or ``None``); ``parser.error`` names the first that
    exists (exit status 2). A command without ``--force`` checks here, then writes through
    :func:`output_file`, which never replaces a file that appears meanwhile."""
    for flag, path in outputs.items():
        if path and Path(path).exists():
            parser.error(f"{flag} {path} exists; not overwriting it")
