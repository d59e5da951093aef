"""Metric outputs: TensorBoard scalars, a JSON-lines file and a console progress line."""
from __future__ import annotations

import json
import os
import time
from typing import Mapping

from absl import logging


class MetricWriter:
  """Writes scalars to `<workdir>/metrics.jsonl` and TensorBoard event files in `<workdir>/tb`.

  Only process 0 writes (other processes get a no-op writer), so multi-host runs produce
  one log.

  Args:
    workdir: the run's directory.
    enabled: False for processes other than 0.
  """

  def __init__(self, workdir: str, enabled: bool = True):
    self.enabled = enabled
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._tb = None
    if enabled:
      os.makedirs(workdir, exist_ok=True)
      from tensorboardX import SummaryWriter  # Lazy: only the writing process needs it.

      self._tb = SummaryWriter(os.path.join(workdir, "tb"), flush_secs=30)

  def write(self, step: int, scalars: Mapping[str, float]) -> None:
    """Appends one record {'step': step, **scalars}."""
    if not self.enabled:
      return
    record = {"step": int(step), **{k: float(v) for k, v in scalars.items()}}
    with open(self.path, "a") as f:
      f.write(json.dumps(record) + "\n")
    for name, value in record.items():
      if name != "step":
        self._tb.add_scalar(name, value, global_step=int(step))

  def flush(self) -> None:
    if self._tb is not None:
      self._tb.flush()

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()


def read_metrics(workdir: str) -> list[dict]:
  """All records of `<workdir>/metrics.jsonl` (for tests, plots and reports)."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


class Progress:
  """Console line with step, loss, images/s and ETA."""

  def __init__(self, total_steps: int, start_step: int):
    self.total_steps = total_steps
    self.start_step = start_step
    self.start_time = time.time()

  def log(self, step: int, scalars: Mapping[str, float]) -> None:
    done = step - self.start_step
    elapsed = time.time() - self.start_time
    eta = elapsed / max(done, 1) * (self.total_steps - step)
    logging.info("step %d/%d  loss %.4f  %.1f img/s  eta %s", step, self.total_steps, scalars.get("loss", float("nan")),
                 scalars.get("images_per_sec", 0.0), _format_seconds(eta))


def _format_seconds(seconds: float) -> str:
  seconds = int(seconds)
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f"{h}:{m:02d}:{s:02d}"
