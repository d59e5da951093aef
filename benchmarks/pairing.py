"""Timing two train steps in alternating pairs (benchmarks/paired_step.py, paired_vs_torch.py).

This machine's speed drifts by 10-30% within minutes, so two steps timed in separate
processes minutes apart cannot resolve a change of a few per cent. These helpers time two
variants one step at a time, alternately in ABBA order, and summarise the per-pair ratios.
"""
from __future__ import annotations

import json
import time
from typing import Callable, Sequence

import jax
import numpy as np

from sslax import parallel, step


def timed_step(config, data, compiler_options=None) -> Callable[[], float]:
  """Compiles the config's train step on the first batch of `data`.

  Args:
    config: the run's config.
    data: an in-memory ImageDataset (its first config.batch_size images are the batch).
    compiler_options: optional XLA options for this compilation.

  Returns:
    `run()`: one step on that batch (the state carried from call to call), returning its
    wall time in seconds, results ready.
  """
  setup = step.build_setup(config, len(data))
  batch = parallel.to_global_batch({"image": data.images[:config.batch_size]}, setup.mesh)
  state = step.create_train_state(setup, jax.random.PRNGKey(0))
  compiled = step.make_train_step(setup).lower(state, batch).compile(compiler_options=compiler_options)
  carried = {"state": state}

  def run() -> float:
    start = time.perf_counter()
    carried["state"], metrics = compiled(carried["state"], batch)
    jax.block_until_ready(metrics)
    return time.perf_counter() - start

  return run


def alternate(runs: dict[str, Callable[[], float]], pairs: int, warmup: int = 2,
              pause_s: float = 0.0) -> dict[str, list[float]]:
  """Times two variants in alternating pairs, ABBA order, after `warmup` untimed calls each.

  Args:
    runs: exactly two names to callables that run one step and return its seconds.
    pairs: timed pairs.
    warmup: untimed calls of each, alternating, first.
    pause_s: sleep before each call (lets the idle variant's threads go to sleep).

  Returns:
    Each name's `pairs` step times in seconds, pair i at index i.
  """
  first, second = runs
  for _ in range(warmup):
    for name in (first, second):
      time.sleep(pause_s)
      runs[name]()
  times = {first: [], second: []}
  for i in range(pairs):
    for name in (first, second) if i % 2 == 0 else (second, first):
      time.sleep(pause_s)
      times[name].append(runs[name]())
  return times


def summary(times_a: Sequence[float], times_b: Sequence[float], a: str, b: str) -> dict:
  """Medians of both and of the per-pair ratio a/b (above 1: b is faster), its quartiles, and
  the fraction of pairs in which b was faster, keyed '{a}_median_s', '{a}_over_{b}_median'..."""
  ta, tb = np.asarray(times_a), np.asarray(times_b)
  ratio = ta / tb
  return {
      f"{a}_median_s": round(float(np.median(ta)), 4), f"{b}_median_s": round(float(np.median(tb)), 4),
      f"ratio_{a}_over_{b}_median": round(float(np.median(ratio)), 4),
      "ratio_quartiles": [round(float(q), 4) for q in np.percentile(ratio, [25, 75])],
      f"{b}_faster_fraction": round(float(np.mean(tb < ta)), 3),
  }


def report(result: dict, out: str | None) -> None:
  """Prints the result as JSON and writes it to `out` too, if given."""
  print(json.dumps(result, indent=2))
  if out:
    with open(out, "w") as f:
      json.dump(result, f, indent=2)
