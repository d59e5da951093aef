r"""Command line: `python -m sslax.main --config=configs/simclr.py[:preset] --workdir=DIR`.

With an evaluation config (`configs/eval.py`) it evaluates a pretrained workdir instead.

Fields of the config can be overridden with `--config.key=value`, e.g.
`--config.batch_size=256 --config.optimizer.name=sgd`. Rerunning the same command in
the same workdir resumes from the latest checkpoint.
"""
from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # Before TensorFlow is imported anywhere.

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

FLAGS = flags.FLAGS
_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/simclr.py:cpu.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and results.")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None,
                                   "host:port of process 0 for multi-process runs (jax.distributed).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes in a multi-process run.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index in a multi-process run.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  config = _CONFIG.value
  from sslax import host

  host.reexec_with_fast_malloc(config)  # Returns only where it does nothing.
  import jax

  distributed = bool(_COORDINATOR.value or os.environ.get("SSLAX_DISTRIBUTED"))
  host.set_cpu_devices(config, distributed=distributed)  # Before the first jax.devices().
  if distributed:
    # On Cloud TPU pods and SLURM/GKE GPU clusters jax finds these by itself.
    jax.distributed.initialize(coordinator_address=_COORDINATOR.value, num_processes=_NUM_PROCESSES.value,
                               process_id=_PROCESS_ID.value)
  logging.info("JAX %s, process %d/%d, devices: %s", jax.__version__, jax.process_index(), jax.process_count(),
               jax.devices())
  if "protocol" in config:  # configs/eval.py: evaluate a pretrained workdir.
    from sslax.evaluate.run import evaluate
    from sslax.metrics import quiet_library_logs

    quiet_library_logs()
    evaluate(config, _WORKDIR.value)
    return
  from sslax import train

  summary = train.train_and_evaluate(config, _WORKDIR.value)
  if summary.get("stopped_by_signal"):
    logging.info("Stopped by signal at step %d; rerun the same command to resume.", summary["step"])


if __name__ == "__main__":
  app.run(main)
