#!/usr/bin/env bash
# Launch sslax on a Cloud TPU VM or pod slice: create it, install sslax on every worker,
# then run the same training command on all workers (jax discovers the pod topology).
#
#   launch/tpu_vm.sh NAME ZONE ACCELERATOR_TYPE CONFIG WORKDIR [--config.key=value ...]
#   e.g. launch/tpu_vm.sh ssl-v4 us-central2-b v4-32 configs/simclr.py:cifar10 gs://BUCKET/simclr_c10
#
# WORKDIR should be a gs:// path so every worker sees the same checkpoints (orbax writes
# to GCS directly); TFDS data likewise: set TFDS_DATA_DIR=gs://BUCKET/tensorflow_datasets.
# Rerunning the script resumes from the latest checkpoint in WORKDIR.
set -euo pipefail
if [ $# -lt 5 ]; then
  sed -n '2,12p' "$0"; exit 2
fi
NAME=$1 ZONE=$2 TYPE=$3 CONFIG=$4 WORKDIR=$5; shift 5
VERSION=${TPU_SOFTWARE_VERSION:-tpu-ubuntu2204-base}
REPO_URL=${SSLAX_REPO_URL:?set SSLAX_REPO_URL to the git URL of your sslax checkout}
TFDS_DIR=${TFDS_DATA_DIR:?set TFDS_DATA_DIR (e.g. gs://BUCKET/tensorflow_datasets)}

if ! gcloud compute tpus tpu-vm describe "$NAME" --zone "$ZONE" >/dev/null 2>&1; then
  gcloud compute tpus tpu-vm create "$NAME" --zone "$ZONE" --accelerator-type "$TYPE" --version "$VERSION"
fi
run_all() { gcloud compute tpus tpu-vm ssh "$NAME" --zone "$ZONE" --worker=all --command "$1"; }
run_all "set -e; [ -d sslax ] || git clone -q $REPO_URL sslax; cd sslax && git pull -q && python3 -m pip install -q -e '.[tpu]'"
run_all "cd sslax && SSLAX_DISTRIBUTED=1 TFDS_DATA_DIR=$TFDS_DIR nohup python3 -m sslax.main --config=$CONFIG --workdir=$WORKDIR $* > train.log 2>&1 &"
echo "Started on all workers of $NAME. Follow with:"
echo "  gcloud compute tpus tpu-vm ssh $NAME --zone $ZONE --worker=0 --command 'tail -f sslax/train.log'"
