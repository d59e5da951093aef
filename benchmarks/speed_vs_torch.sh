#!/usr/bin/env bash
# sslax's SimCLR train step beside PyTorch's (benchmarks/torch_reference.py), interleaved over
# ROUNDS rounds in one run so that the ratios share the machine's moment. Needs the `bench` extra.
#   sslax: the CPU default (native convolution kernels where a C++ compiler builds them, two-pass
#   BatchNorm backward, one XLA device per core, tcmalloc where installed, else glibc's malloc on
#   huge pages: sslax/host.py), the same with the GEMM gradients (the default before the native
#   kernels), with XLA's own gradients, with Flax's BatchNorm, and the default of before
#   sslax/host.py (one device, glibc's malloc on 4 KiB pages); where tcmalloc is installed
#   (Debian: apt-get install libtcmalloc-minimal4), also glibc's malloc on huge pages.
#   PyTorch: NCHW, channels_last, channels_last with the same huge-page malloc tunable and, where
#   tcmalloc is installed, channels_last with the same tcmalloc preloaded.
#
#   TFDS_DATA_DIR=../shared/tensorflow_datasets bash benchmarks/speed_vs_torch.sh [WIDTH] [ROUNDS] [STEPS]
#
# Writes one JSON line per measurement (tagged with its round and variant) to
# benchmarks/results/speed_vs_torch_w$WIDTH.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."
WIDTH="${1:-0.25}"; ROUNDS="${2:-2}"; STEPS="${3:-5}"
PY="${PYTHON:-python}"; TORCH_PY="${TORCH_PYTHON:-$PY}"
OUT="benchmarks/results/speed_vs_torch_w${WIDTH}.jsonl"
mkdir -p benchmarks/results && : > "$OUT"
TMP="$(mktemp -d)"; trap 'rm -rf "$TMP"' EXIT
HIDDEN=512; [ "$WIDTH" = "1.0" ] && HIDDEN=2048  # The projection head's hidden width, the same in both.
append() {  # The last result, tagged with its round and variant, as one line of $OUT.
  "$PY" -c "import json; r = json.load(open('$TMP/r.json')); r['round'] = $1; r['variant'] = '$2'; print(json.dumps(r))" >> "$OUT"
}
HUGEPAGES="glibc.malloc.hugetlb=1"
TCMALLOC="$("$PY" -c 'from sslax import host; print(host.find_tcmalloc() or "")')"
SSLAX_VARIANTS=(default gemm_gradients xla_gradients flax_batchnorm one_device_4k_pages)
TORCH_VARIANTS=(nchw channels_last channels_last_hugepages)
if [ -n "$TCMALLOC" ]; then
  SSLAX_VARIANTS+=(glibc_hugepages); TORCH_VARIANTS+=(channels_last_tcmalloc)
fi
# gperftools logs every allocation over 1 GiB to stderr unless told otherwise (sslax/host.py's setting).
export "$("$PY" -c 'from sslax import host; print("=".join(host._TCMALLOC_QUIET))')"
for round in $(seq "$ROUNDS"); do
  for variant in "${SSLAX_VARIANTS[@]}"; do
    case "$variant" in
      default) extra=() ;;
      gemm_gradients) extra=(--config.model.conv_impl=gemm) ;;
      xla_gradients) extra=(--config.model.conv_impl=xla) ;;
      flax_batchnorm) extra=(--config.model.bn_impl=flax) ;;
      one_device_4k_pages) extra=(--config.cpu_devices=1 --config.cpu_malloc=glibc --config.cpu_hugepages=False) ;;
      glibc_hugepages) extra=(--config.cpu_malloc=glibc) ;;
    esac
    [ "$WIDTH" = "1.0" ] && [ "$variant" = "xla_gradients" ] && continue  # Minutes per step at x1.0.
    "$PY" benchmarks/train_speed.py --config=configs/simclr.py:cpu --config.batch_size=256 \
      --config.augment.crop_size=32 --config.model.width_multiplier="$WIDTH" \
      "--config.model.projector.hidden_dims=($HIDDEN,)" "${extra[@]}" \
      --steps="$STEPS" --out="$TMP/r.json" > /dev/null
    append "$round" "sslax_$variant"
  done
  for variant in "${TORCH_VARIANTS[@]}"; do
    layout=""; tunables="${GLIBC_TUNABLES:-}"; preload="${LD_PRELOAD:-}"
    [ "$variant" != "nchw" ] && layout="--channels_last"
    [ "$variant" = "channels_last_hugepages" ] && tunables="$HUGEPAGES"
    [ "$variant" = "channels_last_tcmalloc" ] && preload="$TCMALLOC"
    LD_PRELOAD="$preload" GLIBC_TUNABLES="$tunables" "$TORCH_PY" benchmarks/torch_reference.py --width="$WIDTH" --batch=256 --crop=32 \
      --hidden="$HIDDEN" --steps="$STEPS" $layout --out="$TMP/r.json" > /dev/null
    append "$round" "torch_$variant"
  done
done
cat "$OUT"
