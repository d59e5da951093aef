#!/usr/bin/env bash
# Launch sslax on a Cloud TPU VM: one host (v4-8, v5litepod-8, ...) or a pod slice (v4-32, ...).
# Creates the TPU if it does not exist (directly, or through a queued resource with QUEUED=1),
# installs sslax on every worker, then starts the same training command on all workers
# (--worker=all); jax.distributed finds the slice's topology and coordinator by itself.
#
#   launch/tpu_vm.sh [--dry-run] NAME ZONE ACCELERATOR_TYPE CONFIG WORKDIR [--config.key=value ...]
#   e.g. SSLAX_REPO_URL=https://github.com/you/sslax TFDS_DATA_DIR=gs://BUCKET/tensorflow_datasets \
#        launch/tpu_vm.sh ssl-v4 us-central2-b v4-32 configs/simclr.py:cifar10 gs://BUCKET/simclr_c10
#
# --dry-run prints every gcloud command instead of running it.
# WORKDIR must be a gs:// path (orbax writes checkpoints to GCS from every worker); so should
# TFDS_DATA_DIR be. Rerunning the same command resumes from the latest checkpoint in WORKDIR.
# Environment: SSLAX_REPO_URL (required), TFDS_DATA_DIR (required), TPU_SOFTWARE_VERSION
# (default tpu-ubuntu2204-base), QUEUED=1 (create through `queued-resources`, waits until the
# slice is ACTIVE), SPOT=1 (spot capacity).
set -euo pipefail
source "$(dirname "$0")/common.sh"
usage_if_short 5
NAME=${ARGS[0]} ZONE=${ARGS[1]} TYPE=${ARGS[2]} CONFIG=${ARGS[3]} WORKDIR=${ARGS[4]}
OVERRIDES=("${ARGS[@]:5}")
VERSION=${TPU_SOFTWARE_VERSION:-tpu-ubuntu2204-base}
REPO_URL=${SSLAX_REPO_URL:?set SSLAX_REPO_URL to the git URL of your sslax checkout}
TFDS_DIR=${TFDS_DATA_DIR:?set TFDS_DATA_DIR (e.g. gs://BUCKET/tensorflow_datasets)}
check_workdir_shared "$WORKDIR" gcs

# Hosts (= sslax processes) of a slice: v2/v3/v4/v5p name TensorCores (8 per host); v5e and
# v6e name chips, 4 per host above their 8-chip single-host slices.
hosts_of() {
  local family=${1%-*} n=${1##*-}
  case "$family" in
    v2|v3|v4|v5p) echo $(( n > 8 ? n / 8 : 1 )) ;;
    v5litepod|v5e|v6e) echo $(( n > 8 ? n / 4 : 1 )) ;;
    *) echo "error: unknown accelerator type '$1' (expected e.g. v4-32, v5p-16, v5litepod-16, v6e-8)" >&2; exit 2 ;;
  esac
}
HOSTS=$(hosts_of "$TYPE")
echo "TPU $NAME ($TYPE in $ZONE): $HOSTS worker(s), one sslax process each; coordinator: worker 0 (found by jax)."
echo "config: $CONFIG  workdir: $WORKDIR"

capacity=()
[ "${SPOT:-0}" = 1 ] && capacity=(--spot)
exists() { [ "$DRY_RUN" = 0 ] && gcloud compute tpus tpu-vm describe "$NAME" --zone "$ZONE" >/dev/null 2>&1; }
if ! exists; then
  if [ "${QUEUED:-0}" = 1 ]; then
    run gcloud compute tpus queued-resources create "$NAME" --node-id "$NAME" --zone "$ZONE" \
        --accelerator-type "$TYPE" --runtime-version "$VERSION" "${capacity[@]}"
    if [ "$DRY_RUN" = 1 ]; then
      echo "+ (wait until: gcloud compute tpus queued-resources describe $NAME --zone $ZONE --format='value(state.state)' prints ACTIVE)"
    else
      until [ "$(gcloud compute tpus queued-resources describe "$NAME" --zone "$ZONE" --format='value(state.state)')" = ACTIVE ]; do
        echo "waiting for queued resource $NAME to become ACTIVE..."; sleep 60
      done
    fi
  else
    run gcloud compute tpus tpu-vm create "$NAME" --zone "$ZONE" --accelerator-type "$TYPE" --version "$VERSION" \
        "${capacity[@]}"
  fi
fi
on_all_workers() { run gcloud compute tpus tpu-vm ssh "$NAME" --zone "$ZONE" --worker=all --command "$1"; }
on_all_workers "set -e; [ -d sslax ] || git clone -q $REPO_URL sslax; cd sslax && git pull -q && python3 -m pip install -q -e '.[tpu]'"
train="python3 -m sslax.main $(quote_args "--config=$CONFIG" "--workdir=$WORKDIR" "${OVERRIDES[@]}")"
on_all_workers "cd sslax && SSLAX_DISTRIBUTED=1 TFDS_DATA_DIR=$TFDS_DIR nohup $train > train.log 2>&1 &"
echo "Started on all $HOSTS worker(s) of $NAME. Follow with:"
echo "  gcloud compute tpus tpu-vm ssh $NAME --zone $ZONE --worker=0 --command 'tail -f sslax/train.log'"
