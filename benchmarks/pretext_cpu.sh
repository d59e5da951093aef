#!/usr/bin/env bash
# 20-minute CPU-preset runs of a method (the pretext tasks of issue 14, the methods of issue 15),
# each followed by the frozen-feature linear probe. Usage, from the repository root:
#   TFDS_DATA_DIR=../shared/tensorflow_datasets bash benchmarks/pretext_cpu.sh rotnet jigsaw ...
# Writes workdirs/<method>_cpu (training; its final kNN is in the log), workdirs/<method>_cpu_eval
# (results.md of the linear probe) and workdirs/logs/<method>_{train,eval}.log, whose
# /usr/bin/time -v block holds the peak RSS ("Maximum resident set size"). The probe always
# uses the full CIFAR-10 training split, also for presets that pretrain on a subset (exemplar),
# and evaluates at the input size a preset trains at: 16 px for the denoising AE, counting and
# the context encoder (their random-init baseline: configs/eval.py:frozen --config.image_size=16),
# 48 px for relative patch location (its views are upscaled to 48).
# The probes of MAE and CPC also score their own baselines (a random-init ViT of MAE's size; CPC's
# random-init ResNet read as the mean of 3x3 grid tiles, as CPC is evaluated) and raw pixels, as
# the whole-image ResNet baselines of the other rows do not apply to them; MAE's probe skips raw
# pixels and reads kNN from the same features (configs/eval.py:frozen), as do jigsaw, relative patch
# location and the 16-px presets.
set -euo pipefail
minutes="${MINUTES:-20}"
mkdir -p workdirs/logs
for method in "$@"; do
  workdir="workdirs/${method}_cpu"
  case "${method}" in
    denoising_ae|counting|context_encoder) eval_size=(--config.image_size=16) ;;
    relative_patch) eval_size=(--config.image_size=48) ;;
    *) eval_size=() ;;
  esac
  baselines=False
  # Their baselines are not the 32-px whole-image ones: MAE's ViT, CPC's grid, relative patch
  # location's grid of 11-px tiles of 48-px images.
  [[ "${method}" == mae || "${method}" == cpc || "${method}" == relative_patch ]] && baselines=True
  # MAE: no kNN at the end of training; the probe's frozen protocol reads kNN and linear from one
  # extraction of the ViT's features (minutes per network on 2 cores), without raw pixels.
  # Jigsaw, relative patch location and the 16-px presets likewise: their kNN is read where the
  # linear probe reads its features (the 3x3 grid of training-size tiles, or 16-px images), not on
  # the training run's 32-px images.
  train_extra=() eval_protocol=linear eval_extra=()
  case "${method}" in
    mae|jigsaw|relative_patch|denoising_ae|counting|context_encoder)
      train_extra=(--config.knn.at_end=False) eval_protocol=frozen eval_extra=(--config.raw_pixels=False) ;;
  esac
  /usr/bin/time -v python -m sslax.main --config="configs/${method}.py:cpu" \
      --workdir="${workdir}" --config.max_train_minutes="${minutes}" "${train_extra[@]}" \
      > "workdirs/logs/${method}_train.log" 2>&1
  /usr/bin/time -v python -m sslax.main --config="configs/eval.py:${eval_protocol}" \
      --config.pretrained_workdir="${workdir}" --workdir="${workdir}_eval" \
      --config.baselines="${baselines}" --config.train_split=train "${eval_size[@]}" "${eval_extra[@]}" \
      > "workdirs/logs/${method}_eval.log" 2>&1
done
