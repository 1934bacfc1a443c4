#!/usr/bin/env bash
# One prepared device check for barrierlb's GPU paths (docs/gpu.md), at most 8 minutes.
#
#   bash benchmarks/device_check.sh                 # writes under $OUT, or under out/device_check-<time>/
#
# Runs, each under its own time limit, what the machine allows:
#   1. the GPU tests (pytest -m gpu; without CuPy and a GPU they skip, with the reason);
#   2. benchmarks/decision.py --fleet --quick: the batched solver on CuPy (--gpu, where a GPU is)
#      and on numpy beside the CPU fast solver, at G=1024/pool=4096/H=32 and G=4096/pool=16384/H=32;
#   3. examples/cuda_decode/run.py with round-robin, greedy and bfio on 4 CUDA streams, at two sizes
#      (on the host executor, --device cpu, where no GPU is);
#   4. benchmarks/mpi_overhead.py's worker at -n 2, 4, 8 and 16 (the per-size run its main launches).
# It first checks Python, numpy, barrierlb, CuPy and a device, NVRTC, MPI (mpi4py, its library,
# mpiexec), numba and array-api-compat/-strict, and says what is missing. Out of at most 8 files:
# summary.json (checks, each step's status and time, the headline figures), device_check.log
# (everything printed), gpu_tests.xml, fleet.json, cuda_decode_small.json, cuda_decode_large.json,
# mpi_overhead.json.
#
# The lent GPU machine has CuPy (cupy-cuda13x), numba, mpi4py, scipy, pytest and hypothesis, and
# no registry. Carry what it lacks as wheels in .whl/ (git-ignored), downloaded here with:
#
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#     -d .whl mpich==5.0.2 array-api-compat==1.16.0 array-api-strict==2.6.1
#
# and run with the device tool: command `bash benchmarks/device_check.sh`, carry [".whl"], a
# timeout of 600 s. The pure-Python wheels are installed into a temporary folder; the mpich wheel
# (MPICH 5.0.2, 13 MB) is unpacked and used only when mpi4py cannot load an MPI library of the
# machine's own. barrierlb itself is put on PYTHONPATH from this checkout (no install needed).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
STARTED=$(date +%s)
BUDGET_S=${DEVICE_CHECK_BUDGET_S:-470}
if [ -z "${OUT:-}" ]; then
    OUT="$ROOT/out/device_check-$(date -u +%Y%m%dT%H%M%SZ)"
fi
if [ -e "$OUT" ] && [ -n "$(ls -A "$OUT" 2>/dev/null)" ]; then
    echo "device_check: $OUT is not empty; not overwriting it (set OUT to an empty folder)" >&2
    exit 2
fi
mkdir -p "$OUT"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
LOG="$OUT/device_check.log"
STEPS="$WORK/steps.tsv"
: >"$STEPS"
PY=${PYTHON:-python3}
# PYTHONSAFEPATH: no "python -c"/"-m" puts this folder first on sys.path, where barrierlb/ without
# its backends/ would shadow the package (installed or staged below).
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PYTHONSAFEPATH=1
log() { echo "[device_check +$(( $(date +%s) - STARTED ))s] $*" | tee -a "$LOG"; }

# ------------------------------------------------------------------ environment
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
    pure=$(ls .whl/*.whl | grep -v '/mpich-' || true)
    if [ -n "$pure" ]; then
        # shellcheck disable=SC2086
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$WORK/site" \
            $pure >>"$LOG" 2>&1 && export PYTHONPATH="$WORK/site${PYTHONPATH:+:$PYTHONPATH}" \
            && log "installed carried wheels: $(echo $pure | tr '\n' ' ')"
    fi
fi
if ! "$PY" -c "import barrierlb.backends.cuda" >/dev/null 2>&1; then
    # Not installed: stage the package as setuptools lays it out (backends/ is barrierlb.backends).
    mkdir -p "$WORK/stage"
    cp -r barrierlb "$WORK/stage/barrierlb"
    cp -r backends "$WORK/stage/barrierlb/backends"
    export PYTHONPATH="$WORK/stage${PYTHONPATH:+:$PYTHONPATH}"
    log "barrierlb staged from this checkout on PYTHONPATH"
fi
find_mpiexec() { PATH="$(dirname "$(command -v "$PY")"):$PATH" command -v mpiexec || true; }
MPIEXEC=$(find_mpiexec)
if { ! "$PY" -c "from mpi4py import MPI" >/dev/null 2>&1 || [ -z "$MPIEXEC" ]; } && ls .whl/mpich-*.whl >/dev/null 2>&1
then
    # No usable MPI of the machine's own: unpack the carried mpich wheel's programs and libraries
    # (pip --target would leave its lib/ out) and point mpi4py at its libmpi.
    "$PY" - "$(ls .whl/mpich-*.whl | head -1)" "$WORK/mpich" <<'EOF_UNZIP'
import os, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as wheel:
    for member in wheel.infolist():
        parts = member.filename.split("/")
        # mpich-X.data/data/{bin,lib}/...
        if len(parts) > 3 and parts[0].endswith(".data") and parts[1] == "data" and parts[2] in ("bin", "lib") \
                and parts[-1]:
            target = os.path.join(sys.argv[2], *parts[2:])
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with wheel.open(member) as source, open(target, "wb") as out:
                out.write(source.read())
            mode = (member.external_attr >> 16) & 0o777
            os.chmod(target, mode or 0o755)
EOF_UNZIP
    MPICH_DATA="$WORK/mpich"
    chmod +x "$MPICH_DATA"/bin/* 2>/dev/null
    export PATH="$MPICH_DATA/bin:$PATH" LD_LIBRARY_PATH="$MPICH_DATA/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    export MPI4PY_LIBMPI="$MPICH_DATA/lib/libmpi.so.12"
    MPIEXEC=$(find_mpiexec)
    log "MPI runtime: the carried mpich wheel, unpacked in $MPICH_DATA"
fi
# Open MPI refuses root without these; MPICH ignores them.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl='^ofi' \
    PRTE_MCA_rmaps_default_mapping_policy=:oversubscribe

"$PY" - "$WORK/checks.json" "$MPIEXEC" <<'EOF' 2>&1 | tee -a "$LOG"
import json, os, subprocess, sys

checks = {}

def check(name, fn):
    try:
        checks[name] = {"ok": True, "detail": str(fn())}
    except BaseException as error:               # a check must report, never stop the script
        checks[name] = {"ok": False, "detail": f"{type(error).__name__}: {error}"}

check("python", lambda: sys.version.split()[0] + " at " + sys.executable)
check("numpy", lambda: __import__("numpy").__version__)
check("barrierlb", lambda: __import__("barrierlb.backends.cuda").__file__)
check("numba", lambda: __import__("numba").__version__)
check("array_api_compat", lambda: __import__("array_api_compat").__version__)
check("array_api_strict", lambda: __import__("array_api_strict").__version__)

def cupy_version():
    import cupy
    return cupy.__version__

def gpu():
    import cupy
    count = cupy.cuda.runtime.getDeviceCount()
    props = cupy.cuda.runtime.getDeviceProperties(0)
    cupy.zeros(1)
    return f"{count} device(s); device 0: {props['name'].decode()}, driver {cupy.cuda.runtime.driverGetVersion()}"

def nvrtc():
    import cupy
    kernel = cupy.ElementwiseKernel("float32 x", "float32 y", "y = 2 * x", "device_check_double")
    value = float(kernel(cupy.ones(4, dtype=cupy.float32)).sum())
    if value != 8.0:
        raise RuntimeError(f"a compiled kernel computed {value}, not 8.0")
    return "NVRTC %d.%d compiled and ran a kernel" % cupy.cuda.nvrtc.getVersion()

def mpi():
    from mpi4py import MPI
    mpiexec = sys.argv[2]
    if not mpiexec:
        raise RuntimeError("mpi4py loads, but no mpiexec is on PATH")
    return f"{MPI.Get_library_version().splitlines()[0].strip()}; mpiexec {mpiexec}"

check("cupy", cupy_version)
check("gpu", gpu)
check("nvrtc", nvrtc)
check("mpi", mpi)
missing = [name for name, c in checks.items() if not c["ok"]]
for name, c in checks.items():
    print(f"  {'ok ' if c['ok'] else 'MISSING'} {name:17} {c['detail']}")
if missing:
    print(f"  missing: {', '.join(missing)}; the steps that need them run reduced or are skipped (summary.json)")
json.dump(checks, open(sys.argv[1], "w"), indent=2)
EOF
ok() { "$PY" -c "import json,sys; sys.exit(0 if json.load(open('$WORK/checks.json'))['$1']['ok'] else 1)"; }
HAVE_GPU=0; ok gpu && HAVE_GPU=1
HAVE_MPI=0; ok mpi && HAVE_MPI=1

# ------------------------------------------------------------------ steps
# step NAME LIMIT_S COMMAND...: run under a time limit (never past the budget), log, record.
step() {
    local name=$1 limit=$2; shift 2
    local left=$(( BUDGET_S - ($(date +%s) - STARTED) ))
    if [ "$left" -lt 15 ]; then
        log "SKIP $name: the ${BUDGET_S}s budget is spent"
        printf '%s\tskipped\t0\tbudget spent\n' "$name" >>"$STEPS"
        return
    fi
    [ "$limit" -gt "$left" ] && limit=$left
    log "RUN  $name (limit ${limit}s): $*"
    local begun rc
    begun=$(date +%s)
    timeout --kill-after=10 "$limit" "$@" >>"$LOG" 2>&1
    rc=$?
    local took=$(( $(date +%s) - begun ))
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
        log "TIME $name after ${took}s"
        printf '%s\ttimeout\t%s\t%s\n' "$name" "$took" "limit ${limit}s" >>"$STEPS"
    else
        log "DONE $name rc=$rc in ${took}s"
        printf '%s\t%s\t%s\t%s\n' "$name" "$([ "$rc" -eq 0 ] && echo ok || echo failed)" "$took" "rc $rc" >>"$STEPS"
    fi
}

# 1. GPU tests (they skip, naming the reason, without CuPy and a device).
step gpu_tests 120 "$PY" -m pytest -m gpu tests -q -rs -p no:cacheprovider --continue-on-collection-errors \
    --junitxml="$OUT/gpu_tests.xml"

# 2. Fleet decision points: CuPy rows (with a GPU), numpy stand-in and the CPU fast solver.
FLEET_GPU=(); [ "$HAVE_GPU" = 1 ] && FLEET_GPU=(--gpu)
step fleet 170 "$PY" benchmarks/decision.py --fleet --quick "${FLEET_GPU[@]}" --json "$OUT/fleet.json"

# 3. The CUDA decode example per policy, on 4 streams (or host lanes without a GPU).
if [ "$HAVE_GPU" = 1 ]; then DEVICE=cuda; SMALL=(); LARGE=(--dim 2048 --slots 16 --requests 192)
else DEVICE=cpu; SMALL=(--host-clock thread --dim 64 --prompt-mean 400 --output-mean 30 --requests 96)
     LARGE=(--host-clock thread --dim 256 --prompt-mean 800 --output-mean 30 --requests 160 --slots 6); fi
step cuda_decode_small 60 env OPENBLAS_NUM_THREADS=1 "$PY" examples/cuda_decode/run.py --device "$DEVICE" --workers 4 "${SMALL[@]}" \
    --json "$OUT/cuda_decode_small.json"
step cuda_decode_large 90 env OPENBLAS_NUM_THREADS=1 "$PY" examples/cuda_decode/run.py --device "$DEVICE" --workers 4 "${LARGE[@]}" \
    --json "$OUT/cuda_decode_large.json"

# 4. MPI overhead per superstep at 2, 4, 8 and 16 ranks.
MPI_STEPS=${DEVICE_CHECK_MPI_STEPS:-200}
if [ "$HAVE_MPI" = 1 ]; then
    for ranks in 2 4 8 16; do
        step "mpi_$ranks" 60 "$MPIEXEC" -n "$ranks" "$PY" -m mpi4py benchmarks/mpi_overhead.py --worker \
            --steps "$MPI_STEPS" --out "$WORK/mpi_$ranks.json"
    done
else
    log "SKIP mpi: no working MPI (see the checks above)"
    printf 'mpi\tskipped\t0\tno working MPI\n' >>"$STEPS"
fi

# ------------------------------------------------------------------ summary
"$PY" - "$WORK" "$OUT" "$(( $(date +%s) - STARTED ))" <<'EOF' 2>&1 | tee -a "$LOG"
import glob, json, os, sys

work, out, total_s = sys.argv[1], sys.argv[2], int(sys.argv[3])
checks = json.load(open(os.path.join(work, "checks.json")))
steps = []
for line in open(os.path.join(work, "steps.tsv")):
    name, status, seconds, detail = line.rstrip("\n").split("\t")
    steps.append({"step": name, "status": status, "seconds": int(seconds), "detail": detail})

def read(name):
    path = os.path.join(out, name)
    return json.load(open(path)) if os.path.exists(path) else None

mpi_rows = []
for path in sorted(glob.glob(os.path.join(work, "mpi_*.json")), key=lambda p: int(p.rsplit("_", 1)[1][:-5])):
    mpi_rows += json.load(open(path))
if mpi_rows:
    json.dump(mpi_rows, open(os.path.join(out, "mpi_overhead.json"), "w"), indent=2)
fleet = (read("fleet.json") or {}).get("fleet", [])
figures = {
    "fleet": [{k: r.get(k) for k in ("case", "n_workers", "pool", "solver", "engine", "cpu_engine", "p50_ms",
                                     "speedup", "objective_ratio_max", "reduction_ratio_min")} for r in fleet],
    "cuda_decode": {size: [{k: r.get(k) for k in ("policy", "device", "barrier_wait_ms_mean", "idle_fraction",
                                                   "wait_vs_round_robin", "step_ms_mean")}
                           for r in (read(f"cuda_decode_{size}.json") or [])] for size in ("small", "large")},
    "mpi_16_ranks": [{k: r[k] for k in ("policy", "mode", "new_per_rank", "p50_ms", "fraction_of_10ms")}
                     for r in mpi_rows if r["ranks"] == 16],
}
summary = {"total_s": total_s, "gpu": checks["gpu"]["ok"], "checks": checks, "steps": steps, "figures": figures}
json.dump(summary, open(os.path.join(out, "summary.json"), "w"), indent=2)
print(f"summary ({total_s} s):")
for s in steps:
    print(f"  {s['status']:8} {s['step']:18} {s['seconds']:4d} s  {s['detail']}")
if not checks["gpu"]["ok"]:
    print("  no GPU here: the GPU tests skipped, the fleet rows are CPU-only and the decode example ran on the "
          "host executor; the device figures are pending a run on a GPU machine")
print(f"wrote {out}/summary.json")
EOF
