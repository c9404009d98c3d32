#!/usr/bin/env bash
# The GPU checks in one call, for a lent GPU machine: installs the project from this checkout,
# runs the gpu-marked tests (tests/gpu) and the throughput benchmark (benchmarks/gpu_throughput.py),
# and leaves everything in $OUT (default benchmarks/results/gpu/, which the README cites).
#
#   benchmarks/gpu/run.sh             # on a CUDA machine, from the repository root: < 8 minutes on one H100
#   benchmarks/gpu/run.sh --dry-run   # the same steps on CPU: the tests skip, the benchmark runs tiny
#
# Works offline: the machine's Python must already have torch, lightning, scikit-learn, pyarrow,
# tensorboard, pyyaml, psutil, matplotlib, pytest and pytest-timeout (the device image has them);
# the project itself is installed with --no-deps --no-index. PYTHON overrides the interpreter.
#
# $OUT afterwards (7 files, flat): env.txt, tests.log, benchmark.log, gpu_throughput.{csv,md,png},
# runs.tar.gz (each benchmark run's config, logs, event log and probe records).
set -uo pipefail
cd "$(dirname "$0")/../.."

DRY_RUN=0
case "${1:-}" in
  --dry-run) DRY_RUN=1 ;;
  "") ;;
  *) echo "usage: $0 [--dry-run]" >&2; exit 2 ;;
esac

if [ "$DRY_RUN" = 1 ]; then
  # Here the project's venv holds torch; the dry run's numbers are not results: keep them out of results/.
  PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
  OUT=${OUT:-benchmarks/out/gpu-dry-run}
else
  PY=${PYTHON:-python3}
  OUT=${OUT:-benchmarks/results/gpu}
fi
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/ltj-gpu-bench.XXXXXX")
export PYTHONUNBUFFERED=1
START=$SECONDS
say() { echo "[run.sh +$((SECONDS - START))s] $*"; }

# Step limits (seconds), 470 in all, inside the 8 minutes one H100 call may take: install 40,
# versions 20, tests 180 (expected ~100), benchmark 230 (it starts no run after 195 s; a run
# should take 10-25 s there), the rest a few seconds.
say "python: $PY; results: $OUT"

# 1. The project, without network: the trainer's console scripts (ltj-train) must sit beside the
#    interpreter, where the tests look for them.
BIN=$("$PY" -c 'import os, sys; print(os.path.dirname(sys.executable))') || { say "no python: $PY"; exit 3; }
if ! "$PY" -c 'import ltj_api, ltj_trainer, ltj_operator' 2>/dev/null || [ ! -x "$BIN/ltj-train" ]; then
  say "installing the project's distributions (editable, --no-deps --no-index)"
  timeout 40 "$PY" -m pip install -q --no-deps --no-build-isolation --no-index --disable-pip-version-check \
    -e ./api -e ./operator -e ./trainer_image -e ./hack/python \
    || { say "pip install failed"; exit 3; }
fi

{
  echo "date: $(date -u +%FT%TZ)"
  echo "host: $(uname -srm), $(nproc) CPUs"
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  timeout 20 "$PY" - <<'EOF'
import sys
import lightning
import torch
print("python", sys.version.split()[0], sys.executable)
print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version())
print("nccl", ".".join(map(str, torch.cuda.nccl.version())) if torch.cuda.is_available() else "-")
print("lightning", lightning.__version__)
print("cuda devices", [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())])
EOF
} >"$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

# 2. The gpu tests. --noconftest: tests/conftest.py serves the cluster tiers (kopf, the local
#    cluster), none of which a GPU machine has or these tests use.
say "pytest -m gpu tests/gpu"
timeout --kill-after=5 180 "$PY" -m pytest -m gpu tests/gpu -v --durations=0 -p no:cacheprovider --noconftest \
  2>&1 | tee "$OUT/tests.log"
TESTS_RC=${PIPESTATUS[0]}
say "tests exit $TESTS_RC"

# 3. The benchmark: its CSV is rewritten after every run, so a timeout keeps what was measured.
say "benchmark"
if [ "$DRY_RUN" = 1 ]; then
  timeout --kill-after=5 230 "$PY" benchmarks/gpu_throughput.py --dry-run --out "$OUT" --work "$WORK" \
    2>&1 | tee "$OUT/benchmark.log"
else
  timeout --kill-after=5 230 "$PY" benchmarks/gpu_throughput.py --out "$OUT" --work "$WORK" --budget 195 \
    --case-timeout 90 2>&1 | tee "$OUT/benchmark.log"
fi
BENCH_RC=${PIPESTATUS[0]}
say "benchmark exit $BENCH_RC"

tar -czf "$OUT/runs.tar.gz" -C "$WORK" . && rm -rf "$WORK"
say "done: tests $TESTS_RC, benchmark $BENCH_RC; files in $OUT"
[ "$TESTS_RC" = 0 ] && [ "$BENCH_RC" = 0 ]
