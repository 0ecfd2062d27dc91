#!/usr/bin/env bash
# One command on a CUDA machine: per-family training samples/s fp32 vs AMP (bf16, fp16),
# inference eager vs onnxruntime, the OpenPose decode on the device, and 2-GPU torchrun DDP when
# two GPUs exist, and steps/s with the NaN guard read every step vs deferred (issue 25). Sized
# to finish in under 5 minutes; writes benchmarks/results/gpu.md.
#
#   bash benchmarks/gpu.sh                  # everything, report in benchmarks/results/gpu.md
#   bash benchmarks/gpu.sh --families hourglass --steps 20
#   bash benchmarks/gpu.sh --dry-run        # the plan only (works without a GPU)
#   bash benchmarks/gpu.sh --sync-only --steps 50   # steps/s with the loss read every step vs deferred
# Extra arguments go to benchmarks/bench_gpu.py (see --help there).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-}"
if [[ -z "$PY" ]]; then
  if [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=python3; fi
fi
OUT=benchmarks/results/gpu.md
for arg in "$@"; do
  case "$arg" in
    --out|--out=*) OUT="" ;;  # the caller names the report
    -h|--help|--dry-run) OUT="" ;;
  esac
done
if [[ -n "$OUT" ]]; then
  exec "$PY" benchmarks/bench_gpu.py --out "$OUT" "$@"
else
  exec "$PY" benchmarks/bench_gpu.py "$@"
fi
