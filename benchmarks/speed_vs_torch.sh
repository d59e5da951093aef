#!/usr/bin/env bash
# sslax's SimCLR train step (GEMM convolution gradients, the CPU default, and XLA's own) beside
# PyTorch's (benchmarks/torch_reference.py; NCHW and channels_last), interleaved over ROUNDS
# rounds in one run so that the ratios share the machine's moment. Needs the `bench` extra.
#
#   TFDS_DATA_DIR=../shared/tensorflow_datasets bash benchmarks/speed_vs_torch.sh [WIDTH] [ROUNDS] [STEPS]
#
# Writes one JSON line per measurement to benchmarks/results/speed_vs_torch_w$WIDTH.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."
WIDTH="${1:-0.25}"; ROUNDS="${2:-2}"; STEPS="${3:-5}"
PY="${PYTHON:-python}"; TORCH_PY="${TORCH_PYTHON:-$PY}"
OUT="benchmarks/results/speed_vs_torch_w${WIDTH}.jsonl"
mkdir -p benchmarks/results && : > "$OUT"
TMP="$(mktemp -d)"; trap 'rm -rf "$TMP"' EXIT
HIDDEN="(512,)"; [ "$WIDTH" = "1.0" ] && HIDDEN="(2048,)"
append() {  # The last result, tagged with its round, as one line of $OUT.
  "$PY" -c "import json; r = json.load(open('$TMP/r.json')); r['round'] = $1; print(json.dumps(r))" >> "$OUT"
}
for round in $(seq "$ROUNDS"); do
  for impl in gemm xla; do
    "$PY" benchmarks/train_speed.py --config=configs/simclr.py:cpu --config.batch_size=256 \
      --config.augment.crop_size=32 --config.model.width_multiplier="$WIDTH" \
      "--config.model.projector.hidden_dims=$HIDDEN" --config.model.conv_impl="$impl" \
      --steps="$STEPS" --out="$TMP/r.json" > /dev/null
    append "$round"
  done
  for layout in "" "--channels_last"; do
    "$TORCH_PY" benchmarks/torch_reference.py --width="$WIDTH" --batch=256 --crop=32 --steps="$STEPS" $layout \
      --out="$TMP/r.json" > /dev/null
    append "$round"
  done
done
cat "$OUT"
