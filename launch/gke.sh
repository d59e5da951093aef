#!/usr/bin/env bash
# Train on a GKE node pool of TPU slices or GPU nodes: renders an Indexed Job (one pod per
# host, one sslax process each) and a headless Service (stable pod DNS names, so pod 0 is the
# coordinator), then `kubectl apply`s them.
#
#   launch/gke.sh [--dry-run] NAME CONFIG WORKDIR [--config.key=value ...]
#   e.g. IMAGE=us-docker.pkg.dev/PROJECT/sslax/sslax:latest ACCELERATOR=tpu \
#        TPU_ACCELERATOR=tpu-v5-lite-podslice TPU_TOPOLOGY=4x4 \
#        launch/gke.sh simclr-v5e configs/simclr.py:cifar10 gs://BUCKET/simclr_c10
#
# --dry-run prints the rendered manifest and the kubectl command, and calls nothing.
# Environment: IMAGE (required: a container with sslax installed, e.g. `pip install -e .[tpu]`),
# ACCELERATOR=tpu|gpu (default tpu); TPU: TPU_ACCELERATOR (default tpu-v5-lite-podslice),
# TPU_TOPOLOGY (default 2x2), CHIPS_PER_HOST (default 4; 8 for single-host 2x4 slices);
# GPU: NODES (default 2), GPUS_PER_NODE (default 8), GPU_TYPE (default nvidia-h100-80gb);
# TFDS_DATA_DIR (passed to the pods when set). WORKDIR must be a gs:// path. Rerunning after
# `kubectl delete job NAME` resumes from the latest checkpoint in WORKDIR.
set -euo pipefail
source "$(dirname "$0")/common.sh"
usage_if_short 3
NAME=${ARGS[0]} CONFIG=${ARGS[1]} WORKDIR=${ARGS[2]}
OVERRIDES=("${ARGS[@]:3}")
IMAGE=${IMAGE:?set IMAGE to a container image with sslax installed}
ACCELERATOR=${ACCELERATOR:-tpu}
PORT=8476
check_workdir_shared "$WORKDIR" gcs

case "$ACCELERATOR" in
  tpu)
    TOPOLOGY=${TPU_TOPOLOGY:-2x2}
    chips=$(( ${TOPOLOGY//x/*} ))
    per_host=${CHIPS_PER_HOST:-4}
    if (( chips < per_host )); then per_host=$chips; fi
    if (( chips % per_host )); then
      echo "error: TPU_TOPOLOGY=$TOPOLOGY ($chips chips) is not a multiple of CHIPS_PER_HOST=$per_host" >&2; exit 2
    fi
    HOSTS=$(( chips / per_host ))
    # On TPU slices jax.distributed reads the worker list GKE gives each pod.
    coordinator_args=()
    node_selector="cloud.google.com/gke-tpu-accelerator: ${TPU_ACCELERATOR:-tpu-v5-lite-podslice}
        cloud.google.com/gke-tpu-topology: $TOPOLOGY"
    resources="google.com/tpu: $per_host"
    coordinator_note="worker 0 (found by jax on the TPU slice)"
    ;;
  gpu)
    HOSTS=${NODES:-2}
    per_host=${GPUS_PER_NODE:-8}
    coordinator="$NAME-0.$NAME:$PORT"
    coordinator_args=("--coordinator_address=$coordinator" "--num_processes=$HOSTS" '--process_id=$(JOB_COMPLETION_INDEX)')
    node_selector="cloud.google.com/gke-accelerator: ${GPU_TYPE:-nvidia-h100-80gb}"
    resources="nvidia.com/gpu: $per_host"
    coordinator_note="$coordinator"
    ;;
  *) echo "error: ACCELERATOR='$ACCELERATOR' must be tpu or gpu" >&2; exit 2 ;;
esac
echo "GKE job $NAME: $HOSTS pod(s), one sslax process each ($per_host $ACCELERATOR device(s) per pod);" \
     "coordinator: $coordinator_note"
echo "config: $CONFIG  workdir: $WORKDIR"

args_yaml() {  # One YAML list item per argument (double-quoted, with " and \ escaped).
  local a
  for a in "$@"; do
    a=${a//\\/\\\\}
    printf '          - "%s"\n' "${a//\"/\\\"}"
  done
}
env_yaml="        - name: SSLAX_DISTRIBUTED
          value: \"1\""
if [ -n "${TFDS_DATA_DIR:-}" ]; then
  env_yaml+="
        - name: TFDS_DATA_DIR
          value: \"$TFDS_DATA_DIR\""
fi

manifest() {
  cat <<YAML
apiVersion: v1
kind: Service
metadata:
  name: $NAME
spec:
  clusterIP: None
  selector:
    job-name: $NAME
---
apiVersion: batch/v1
kind: Job
metadata:
  name: $NAME
spec:
  completionMode: Indexed
  completions: $HOSTS
  parallelism: $HOSTS
  backoffLimit: 0
  template:
    spec:
      subdomain: $NAME
      restartPolicy: Never
      nodeSelector:
        $node_selector
      containers:
      - name: sslax
        image: $IMAGE
        command:
          - python
          - -m
          - sslax.main
$(args_yaml "--config=$CONFIG" "--workdir=$WORKDIR" "${coordinator_args[@]}" "${OVERRIDES[@]}")
        ports:
        - containerPort: $PORT
        env:
$env_yaml
        resources:
          limits:
            $resources
YAML
}

if [ "$DRY_RUN" = 1 ]; then
  manifest
  echo "+ kubectl apply -f -"
else
  manifest | kubectl apply -f -
  echo "Started. Follow with: kubectl logs -f job/$NAME"
fi
