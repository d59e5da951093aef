"""The pretraining loop: data in, steps, logs, kNN monitor, checkpoints, signals, auto-resume.

`train_and_evaluate(config, workdir)` is the library entry point; `sslax.main` is a thin
command-line wrapper around it. What is compiled (set-up, state, the sharded step) lives
in sslax/step.py, the monitors in sslax/monitors.py.
"""
from __future__ import annotations

import collections
import itertools
import json
import math
import os
import signal
import time
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging

from sslax import parallel
from sslax.checkpoint import Checkpointer, abstract_with_shardings
from sslax.data import load_dataset, train_batches
from sslax.data.streaming import StreamingDataset, streaming_train_batches
from sslax.metrics import MetricWriter, Progress, plot_training_curves, quiet_library_logs, read_metrics
from sslax.monitors import KNNMonitor, warn_if_collapsing, write_method_preview
from sslax.step import Setup, batch_keys, build_setup, create_train_state, make_forward_pass, make_train_step
from sslax.step import validate_config


# Multi-process runs agree on stopping (a signal, the time budget) every this many steps.
STOP_CHECK_EVERY_STEPS = 10


class NonFiniteLossError(FloatingPointError):
  """Training diverged; the last good checkpoint is left as it was."""


class TrainClock:
  """Training-time bookkeeping (as big_vision's chrono): wall-clock seconds spent training.

  Training time counts the steps, input waits and checkpoint saves but not compilation or
  kNN evaluation, so "minutes of training" means the same whatever the evaluation schedule;
  the throughput window is reset after each pause so images/s is training throughput alone.

  Args:
    previous_s: training seconds of an earlier run that this one resumes.
  """

  def __init__(self, previous_s: float = 0.0):
    self.train_s = previous_s
    self._mark = time.time()
    self._window_start, self._window_steps = self._mark, 0

  def tick(self) -> None:
    """Adds the time since the last tick/resume to the training time."""
    now = time.time()
    self.train_s += now - self._mark
    self._mark = now

  def step_done(self) -> None:
    self.tick()
    self._window_steps += 1

  def pause(self) -> None:
    """Stops counting (before an evaluation): what ran so far is training time."""
    self.tick()

  def resume(self) -> None:
    """Starts counting again after an evaluation; the throughput window starts afresh."""
    self._mark = time.time()
    self._window_start, self._window_steps = self._mark, 0

  def window(self) -> tuple[int, float]:
    """(steps, seconds) since the window started; then starts a new window."""
    now = time.time()
    steps, seconds = self._window_steps, now - self._window_start
    self._window_start, self._window_steps = now, 0
    return steps, seconds


class _StopSignal:
  """Turns SIGTERM/SIGINT into a flag the loop checks between steps (save, then exit)."""

  def __init__(self):
    self.received: int | None = None
    self._previous = {}

  def __enter__(self):
    for sig in (signal.SIGTERM, signal.SIGINT):
      try:
        self._previous[sig] = signal.signal(sig, self._handle)
      except ValueError:  # Not the main thread (e.g. a notebook worker): no handler.
        pass
    return self

  def _handle(self, signum, frame):
    del frame
    if self.received is not None and signum == signal.SIGINT:
      raise KeyboardInterrupt  # A second Ctrl-C stops at once.
    self.received = signum

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)


def _any_process(flag: bool) -> bool:
  if jax.process_count() == 1:
    return flag
  from jax.experimental import multihost_utils

  return bool(np.any(multihost_utils.process_allgather(np.array(flag))))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       mesh: jax.sharding.Mesh | None = None) -> dict[str, Any]:
  """Pretrains `config.method` and monitors it; resumes automatically from `workdir`.

  Args:
    config: a config from configs/<method>.py (validated here).
    workdir: directory for checkpoints, metrics.jsonl, TensorBoard events and config.json.
    mesh: device mesh (default: all devices of all processes).

  Returns:
    Summary dict: final 'step', 'stopped_by_signal', last metrics, final 'knn_top1' (if run).
  """
  os.makedirs(workdir, exist_ok=True)
  quiet_library_logs()
  pid, nproc = jax.process_index(), jax.process_count()
  validate_config(config)  # Before touching data or devices, so mistakes fail fast.
  # Every process holds the whole (in-memory) training split and reads its rows of each global
  # batch, so the batches do not depend on the process count (EpochSampler).
  train_data = load_dataset(config.data, config.data.train_split)
  streaming = isinstance(train_data, StreamingDataset)
  if streaming:  # Labels are read with the images; the dataset's metadata says how many classes.
    has_labels, num_classes = train_data.num_classes > 0, train_data.num_classes
  else:
    has_labels = bool(train_data.num_classes) or bool((train_data.labels >= 0).any())
    num_classes = max(train_data.num_classes, int(train_data.labels.max()) + 1) if has_labels else 0
  setup = build_setup(config, len(train_data), mesh, num_classes=num_classes,
                      index_bound=int(train_data.indices.max()) + 1,
                      input_shapes=getattr(train_data, "input_shapes", None))
  mesh = setup.mesh
  logging.info("%s: %d devices in %d process(es), global batch %d, %d steps (%d/epoch, %.1f epochs).",
               config.method, mesh.devices.size, nproc, config.batch_size, setup.total_steps,
               setup.steps_per_epoch, setup.total_steps / setup.steps_per_epoch)
  if pid == 0:
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config.to_json_best_effort(indent=2))

  # Closed on leaving the block, also on an error: pending saves reach the disk first.
  with Checkpointer(workdir, max_to_keep=config.checkpoint.max_to_keep,
                    async_save=config.checkpoint.async_save) as checkpointer:
    state = create_train_state(setup, jax.random.PRNGKey(config.seed))
    if checkpointer.latest_step() is not None:
      state = checkpointer.restore(abstract_with_shardings(state))
      logging.info("Resumed from checkpoint step %d in %s.", int(state.step), checkpointer.directory)
    start_step = int(state.step)

    knn_monitor = None
    if (config.knn.every_steps or config.knn.at_end) and has_labels:
      knn_monitor = KNNMonitor(config, setup.model, mesh, train_data, load_dataset(config.data, config.data.eval_split))

    def batches_from(step: int, keys: tuple[str, ...]):
      to_device = lambda b: parallel.to_global_batch({k: b[k] for k in keys}, mesh)  # noqa: E731
      if streaming:
        return streaming_train_batches(train_data, batch_size=config.batch_size, seed=config.seed, start_step=step,
                                       augment_cfg=config.augment, num_global_views=setup.method.num_views,
                                       process_index=pid, process_count=nproc, keys=keys, to_device=to_device,
                                       prefetch_size=config.data.prefetch)
      return train_batches(train_data, batch_size=config.batch_size, seed=config.seed, start_step=step,
                           process_index=pid, process_count=nproc, to_device=to_device,
                           prefetch_size=config.data.prefetch)

    if start_step == 0:
      t0 = time.time()
      pass_keys = tuple(dict.fromkeys([k for k in batch_keys(setup, streaming) if k != "label"] + ["index"]))
      epoch = (b for _, b in itertools.islice(batches_from(0, pass_keys), setup.steps_per_epoch))
      state = setup.method.before_training(state, make_forward_pass(setup, state, epoch))
      if time.time() - t0 > 1.0:
        logging.info("%s.before_training took %.1f s.", config.method, time.time() - t0)

    writer = MetricWriter(workdir, enabled=pid == 0)
    try:
      summary, state = _loop(setup, state, batches_from(start_step, batch_keys(setup, streaming)), checkpointer,
                             writer, knn_monitor, workdir, start_step)
    finally:
      writer.close()
  finished = summary["step"] >= setup.total_steps or summary.get("stopped_by_time_budget")
  if finished and not summary["stopped_by_signal"] and knn_monitor is not None:
    extra = setup.method.final_metrics(
        setup.model, {"params": state.params, "batch_stats": state.batch_stats}, knn_monitor.test_images,
        np.asarray(knn_monitor.test_labels), mesh=mesh, data_cfg=config.data, batch_size=config.knn.batch_size,
        captions=knn_monitor.test_captions)
    if extra:
      logging.info("%s at the end: %s", config.method, ", ".join(f"{k} {v:.4f}" for k, v in extra.items()))
      summary.update(extra)
  if pid == 0 and finished and not summary["stopped_by_signal"] and setup.method.modality == "image":
    images = knn_monitor.test_images if knn_monitor else train_data.images
    preview = write_method_preview(setup, state, np.asarray(images[:8]), os.path.join(workdir, "preview.png"))
    if preview:
      logging.info("Wrote %s.", preview)
  if pid == 0 and not summary["stopped_by_signal"]:
    with open(os.path.join(workdir, "summary.json"), "w") as f:
      json.dump(summary, f, indent=2)
  return summary


def _loop(setup: Setup, state, batches, checkpointer: Checkpointer, writer: MetricWriter,
          knn_monitor: KNNMonitor | None, workdir: str, start_step: int) -> tuple[dict[str, Any], Any]:
  """Runs the steps from `start_step`; returns the summary (see train_and_evaluate) and the final state."""
  config = setup.config
  pid = jax.process_index()
  stop_at = min(setup.total_steps, config.stop_at_step or setup.total_steps)
  progress = Progress(setup.total_steps, start_step)
  summary: dict[str, Any] = {"stopped_by_signal": False}
  last_metrics: dict[str, float] = {}
  train_step, compile_s = make_train_step(setup), None
  if start_step < stop_at:
    t0 = time.time()
    _, first = next(batches)
    train_step = train_step.lower(state, first).compile()
    compile_s = time.time() - t0
    logging.info("Compiled the train step in %.1f s.", compile_s)
    batches = itertools.chain([(start_step, first)], batches)
  clock = TrainClock(_previous_train_time(workdir, start_step))
  # Steps dispatched whose metrics the host has not read yet. The host reads step i's metrics
  # only after dispatching step i+1, so it never waits on the step it just queued (unless
  # config.sync_every_step); every pending loss is checked before a checkpoint is written.
  pending: collections.deque[tuple[int, dict]] = collections.deque()
  # Multi-process runs agree on stopping (signal, time budget) through a host collective;
  # doing it every step would stall dispatch, so they agree every few steps.
  stop_check_every = 1 if jax.process_count() == 1 else STOP_CHECK_EVERY_STEPS

  def read(done: int, metrics: dict) -> None:
    """Checks step `done`'s loss (raising on divergence) and logs its metrics when due."""
    nonlocal last_metrics, compile_s
    loss = float(metrics["loss"])
    if not math.isfinite(loss):
      checkpointer.wait()
      raise NonFiniteLossError(
          f"Loss became {loss} at step {done}. Training stopped; the last good checkpoint "
          f"(step {checkpointer.latest_step()}) in {checkpointer.directory} is intact. Lower "
          f"--config.optimizer.base_learning_rate or lengthen the warm-up, then rerun (it resumes from there).")
    if done % config.log_every_steps == 0 or done == setup.total_steps:
      steps, seconds = clock.window()
      last_metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
      last_metrics.update(images_per_sec=steps * config.batch_size / seconds, step_time_s=seconds / steps,
                          train_time_s=clock.train_s, epoch=done / setup.steps_per_epoch)
      if compile_s is not None:  # Reported once, with the first record of this run.
        last_metrics["compile_time_s"], compile_s = compile_s, None
      writer.write(done, last_metrics)
      progress.log(done, last_metrics)
      warn_if_collapsing(last_metrics, config.collapse_warning_fraction, done, min_rank=config.collapse_warning_rank)

  def read_pending(keep: int = 0) -> None:
    """Reads all pending steps but the newest `keep`."""
    while len(pending) > keep:
      read(*pending.popleft())

  def save() -> None:
    read_pending()  # Never write a checkpoint of a run that has diverged.
    checkpointer.save(state, int(state.step))

  with _StopSignal() as stop:
    for step, batch in batches:
      if step >= stop_at:
        break
      state, metrics = train_step(state, batch)
      done = step + 1
      pending.append((done, metrics))
      read_pending(keep=0 if config.sync_every_step else 1)
      clock.step_done()
      if knn_monitor and config.knn.every_steps and done % config.knn.every_steps == 0 and done < setup.total_steps:
        read_pending()
        clock.pause()
        knn = knn_monitor(state)
        writer.write(done, dict(knn, train_time_s=clock.train_s))
        logging.info("step %d  kNN top-1 %.4f (%.1f s)", done, knn["knn_top1"], knn["knn_time_s"])
        if pid == 0:
          plot_training_curves(workdir)
        clock.resume()  # kNN time is neither training time nor training throughput.
      if done % config.checkpoint.every_steps == 0 or done == stop_at:
        save()
      clock.tick()
      if done % stop_check_every and done != stop_at:
        continue
      if _any_process(stop.received is not None):
        save()
        logging.warning("Received signal %s: saved checkpoint step %d and stopped. Rerun the same command "
                        "to resume.", stop.received, done)
        summary["stopped_by_signal"] = True
        break
      if config.max_train_minutes and _any_process(clock.train_s >= 60.0 * config.max_train_minutes):
        if done % config.checkpoint.every_steps and done != stop_at:
          save()
        logging.info("Reached max_train_minutes=%s at step %d (%.1f training minutes): saved and stopped.",
                     config.max_train_minutes, done, clock.train_s / 60)
        summary["stopped_by_time_budget"] = True
        break
    read_pending()

  final_step = int(state.step)
  if (knn_monitor and (final_step >= setup.total_steps or summary.get("stopped_by_time_budget"))
      and not summary["stopped_by_signal"] and config.knn.at_end):
    knn = knn_monitor(state)
    writer.write(final_step, dict(knn, train_time_s=clock.train_s))
    logging.info("Final kNN top-1 %.4f at step %d.", knn["knn_top1"], final_step)
    if pid == 0:
      plot_training_curves(workdir)
    summary.update(knn)
  summary.update(last_metrics, step=final_step, total_steps=setup.total_steps)
  return summary, state


def _previous_train_time(workdir: str, start_step: int) -> float:
  """Training seconds logged up to `start_step` by an earlier (interrupted) run."""
  times = [r["train_time_s"] for r in read_metrics(workdir) if "train_time_s" in r and r["step"] <= start_step]
  return max(times, default=0.0)
