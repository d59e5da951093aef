"""Metric outputs: TensorBoard scalars, a JSON-lines file and a console progress line."""
from __future__ import annotations

import json
import logging as pylogging
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


class _LibraryInfoFilter(pylogging.Filter):
  """Drops INFO records of chatty libraries (orbax logs several lines per checkpoint)."""

  QUIET = (f"{os.sep}orbax{os.sep}", f"{os.sep}tensorflow_datasets{os.sep}")

  def filter(self, record: pylogging.LogRecord) -> bool:
    return record.levelno >= pylogging.WARNING or not any(q in record.pathname for q in self.QUIET)


def quiet_library_logs() -> None:
  """Keeps the console to sslax's own progress lines and every library's warnings."""
  for handler in (logging.get_absl_handler(), *pylogging.getLogger().handlers):
    if not any(isinstance(f, _LibraryInfoFilter) for f in handler.filters):
      handler.addFilter(_LibraryInfoFilter())


def _format_seconds(seconds: float) -> str:
  seconds = int(seconds)
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f"{h}:{m:02d}:{s:02d}"


def plot_training_curves(workdir: str, out_name: str = "training_curves.png") -> str | None:
  """Plots loss, online-probe and kNN top-1 against step (kNN annotated with training minutes).

  Args:
    workdir: a pretraining workdir.
    out_name: file name of the PNG written into the workdir.

  Returns:
    The PNG path, or None when there is nothing to plot yet.
  """
  import matplotlib

  matplotlib.use("Agg")  # No display on servers and CI.
  import matplotlib.pyplot as plt

  records = read_metrics(workdir)
  train = [r for r in records if "loss" in r]
  knn = [r for r in records if "knn_top1" in r]
  if not train and not knn:
    return None
  fig, (ax_loss, ax_knn) = plt.subplots(1, 2, figsize=(10, 3.6))
  if train:
    ax_loss.plot([r["step"] for r in train], [r["loss"] for r in train], lw=1)
  ax_loss.set(xlabel="step", ylabel="training loss", title="loss")
  probe = [r for r in train if "online_probe_top1" in r]
  if probe:
    ax_knn.plot([r["step"] for r in probe], [r["online_probe_top1"] for r in probe], lw=1, alpha=0.7,
                label="online linear probe (train batches)")
  if knn:
    ax_knn.plot([r["step"] for r in knn], [r["knn_top1"] for r in knn], "o-", label="kNN top-1 (eval split)")
    for r in knn:
      ax_knn.annotate(f"{r['knn_top1']:.3f}\n{r.get('train_time_s', 0.0) / 60:.0f} min", (r["step"], r["knn_top1"]),
                      fontsize=7, xytext=(2, -18), textcoords="offset points")
  ax_knn.set(xlabel="step", ylabel="top-1", title="accuracy (annotated: kNN, training minutes)")
  ax_knn.legend(fontsize=7, loc="lower right")
  ax_knn.grid(alpha=0.3)
  fig.tight_layout()
  path = os.path.join(workdir, out_name)
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path
