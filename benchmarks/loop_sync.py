r"""Step time of the training loop that reads each step's loss before dispatching the next
(`--config.sync_every_step=True`, the old loop) against the one that reads step i's metrics
while step i+1 runs (the default), alternating the two in one process; and, from step
timestamps, how far dispatch runs ahead of completion: the host time a call to the jitted
step takes to return (dispatch) against the time until its metrics are ready.

Run (the numbers in BENCHMARKS.md):
  python benchmarks/loop_sync.py --config=configs/simclr.py:tiny --config.data.source=synthetic \
      --steps=200 --rounds=3
  python benchmarks/loop_sync.py --config=configs/simclr.py:cpu --config.data.source=synthetic \
      --config.batch_size=64 --steps=40 --rounds=2
"""
from __future__ import annotations

import copy
import json
import os
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402

from sslax import parallel, step, train  # noqa: E402
from sslax.data import load_dataset, train_batches  # noqa: E402
from sslax.metrics import read_metrics  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", "configs/simclr.py:tiny", "Config to run.")
_STEPS = flags.DEFINE_integer("steps", 200, "Training steps per run.")
_ROUNDS = flags.DEFINE_integer("rounds", 3, "Runs of each loop, alternated.")
_OUT = flags.DEFINE_string("out", None, "Optional JSON file for the results.")


def _step_time(config, sync: bool) -> float:
  """Mean step time of one fresh run, after its first logging window (which holds warm-up)."""
  config = copy.deepcopy(config)
  with config.unlocked():
    config.sync_every_step = sync
    config.total_steps = _STEPS.value
    config.warmup_steps = 0
    config.log_every_steps = max(1, _STEPS.value // 10)
    config.knn.every_steps = 0
    config.knn.at_end = False
    config.checkpoint.every_steps = 10 * _STEPS.value  # Only the final save.
  with tempfile.TemporaryDirectory() as workdir:
    train.train_and_evaluate(config, workdir)
    times = [r["step_time_s"] for r in read_metrics(workdir) if "step_time_s" in r][1:]
  return statistics.mean(times)


def _dispatch_timestamps(config, steps: int = 10) -> dict:
  """Median seconds for the jitted step to return (dispatch) and to finish, steps queued one ahead."""
  data = load_dataset(config.data, config.data.train_split)
  setup = step.build_setup(config, len(data))
  state = step.create_train_state(setup, jax.random.PRNGKey(0))
  keys = step.batch_keys(setup)
  batches = train_batches(data, batch_size=config.batch_size, seed=0, start_step=0,
                          to_device=lambda b: parallel.to_global_batch({k: b[k] for k in keys}, setup.mesh))
  train_step = step.make_train_step(setup).lower(state, next(batches)[1]).compile()
  dispatch, done, previous = [], [], None
  for _, (_, batch) in zip(range(steps + 1), batches):
    t0 = time.perf_counter()
    state, metrics = train_step(state, batch)
    dispatch.append(time.perf_counter() - t0)
    if previous is not None:  # Read the step before while this one runs, as the loop does.
      jax.block_until_ready(previous[1])
      done.append(time.perf_counter() - previous[0])
    previous = (t0, metrics)
  return {"dispatch_s": float(np.median(dispatch[1:])), "dispatch_to_ready_s": float(np.median(done[1:]))}


def main(argv):
  del argv
  config = _CONFIG.value
  results = {"sync": [], "async": []}
  for _ in range(_ROUNDS.value):
    for name in ("sync", "async"):
      results[name].append(_step_time(config, name == "sync"))
  summary = {
      **_dispatch_timestamps(config),
      "config": config.method, "batch_size": config.batch_size, "steps": _STEPS.value, "rounds": _ROUNDS.value,
      "step_time_s": {k: [round(v, 5) for v in vs] for k, vs in results.items()},
      "median_sync_over_async": round(statistics.median(results["sync"]) / statistics.median(results["async"]), 3),
  }
  print(json.dumps(summary, indent=2))
  if _OUT.value:
    with open(_OUT.value, "w") as f:
      json.dump(summary, f, indent=2)


if __name__ == "__main__":
  app.run(main)
