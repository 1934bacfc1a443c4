"""Peak memory and time of the trace loaders on a generated large file.

Writes a BurstGPT-format JSON file (the sample's indented layout) of about
``--mb`` megabytes and an Azure-format CSV of ``--csv-mb`` into a temporary folder, then
loads each in a fresh Python process and reports its peak resident memory
during the load (Linux's ``VmHWM``, reset after the imports) above the size
before it, and the load time.
With ``--baseline-src DIR`` (a folder holding another checkout's ``barrierlb``
package, e.g. ``git archive main barrierlb | tar -x -C DIR``) the same loads run
against that code too, side by side, as ratios.

    python benchmarks/loader_memory.py --mb 1000 --csv-mb 100 --baseline-src /tmp/main-src
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ROOT, add_json_argument, check_json_argument, print_table, write_json  # noqa: E402

# Runs in the child: import, reset the peak, load, report the peak above the size before.
_CHILD = """
import json, sys, time
from barrierlb.workloads import load_workload

def status_kb(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1])

open("/proc/self/clear_refs", "w").write("5")      # reset the peak (VmHWM) to the current size
base = status_kb("VmRSS")
started = time.perf_counter()
try:
    workload = load_workload(sys.argv[1], **json.loads(sys.argv[2]))
    outcome = f"{len(workload):,} requests"
except Exception as error:
    outcome = f"{type(error).__name__}: {str(error)[:80]}"
elapsed = time.perf_counter() - started
print(json.dumps({"peak_mb": (status_kb("VmHWM") - base) / 1024, "seconds": elapsed, "outcome": outcome}))
"""


def write_json_trace(path: Path, megabytes: float) -> None:
    """A BurstGPT JSON file of about ``megabytes`` MB."""
    row = '    {\n      "input_length": %d,\n      "output_length": %d\n    }'
    block = ",\n".join(row % (100 + 37 * i % 3000, 1 + 13 * i % 900) for i in range(1000))
    copies = max(1, int(megabytes * 1e6 / len(block)))
    with path.open("w") as handle:
        handle.write('{\n  "dataset": "generated",\n  "data": [\n')
        handle.write(",\n".join([block] * copies))
        handle.write('\n  ]\n}\n')


def write_csv_trace(path: Path, megabytes: float) -> None:
    """An Azure-format CSV of about ``megabytes`` MB."""
    lines = "".join(f"2023-11-16 18:{i // 60 % 60:02d}:{i % 60:02d}.{i:07d},{100 + 37 * i % 3000},"
                    f"{1 + 13 * i % 900}\n" for i in range(1000))
    copies = max(1, int(megabytes * 1e6 / len(lines)))
    with path.open("w") as handle:
        handle.write("TIMESTAMP,ContextTokens,GeneratedTokens\n")
        for _ in range(copies):
            handle.write(lines)


def measure(src: Path, spec: str, options: dict, folder: str) -> dict:
    """One load in a fresh process, run in ``folder``, that imports barrierlb from ``src``
    (``-S``: no editable-install hook)."""
    path = os.pathsep.join([str(src), sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    done = subprocess.run([sys.executable, "-S", "-c", _CHILD, spec, json.dumps(options)], capture_output=True,
                          text=True, env=dict(os.environ, PYTHONPATH=path), cwd=folder, check=False)
    if done.returncode:
        return {"peak_mb": None, "seconds": None, "outcome": done.stderr.strip().splitlines()[-1]}
    return json.loads(done.stdout)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=float, default=200.0, help="size of the generated JSON file in MB (default 200)")
    parser.add_argument("--csv-mb", type=float, default=20.0,
                        help="size of the generated CSV file in MB (default 20; the CSV loader is slower)")
    parser.add_argument("--baseline-src", type=Path, help="folder with another barrierlb package to compare")
    add_json_argument(parser)
    args = parser.parse_args(argv)
    check_json_argument(parser, args)
    sources = [("this", ROOT)] + ([("baseline", args.baseline_src.resolve())] if args.baseline_src else [])
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        json_file, csv_file = Path(folder) / "trace.json", Path(folder) / "trace.csv"
        write_json_trace(json_file, args.mb)
        write_csv_trace(csv_file, args.csv_mb)
        cases = [("burstgpt JSON, all rows", f"burstgpt:{json_file}", {}, json_file),
                 ("burstgpt JSON, 20,000 rows", f"burstgpt:{json_file}", {"n_requests": 20_000}, json_file),
                 ("azure CSV, all rows", f"azure:{csv_file}", {}, csv_file)]
        for case, spec, options, file in cases:
            measured = {name: measure(src, spec, options, folder) for name, src in sources}
            row = {"case": case, "file_mb": file.stat().st_size / 1e6}
            for name, result in measured.items():
                row.update({f"{name}_{key}": value for key, value in result.items()})
            if args.baseline_src and row["baseline_peak_mb"] and row["this_peak_mb"]:
                row["peak_ratio"] = row["this_peak_mb"] / row["baseline_peak_mb"]
                row["time_ratio"] = row["this_seconds"] / row["baseline_seconds"]
            rows.append(row)
    columns = [("case", "case", "{}"), ("file_mb", "file MB", "{:,.0f}")]
    for name, _ in sources:
        columns += [(f"{name}_peak_mb", f"{name} peak MB", "{:,.0f}"), (f"{name}_seconds", f"{name} s", "{:.1f}"),
                    (f"{name}_outcome", f"{name} result", "{}")]
    if args.baseline_src:
        columns += [("peak_ratio", "peak vs baseline", "{:.3f}x"), ("time_ratio", "time vs baseline", "{:.2f}x")]
    print_table(rows, columns, "trace loaders on generated files (peak resident memory during the load)")
    write_json(args.json, rows, force=args.force)
    return 0


if __name__ == "__main__":
    sys.exit(main())
