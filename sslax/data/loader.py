"""Deterministic, resumable batch sampling with background prefetch to devices."""
from __future__ import annotations

import queue
import threading
from typing import Callable, Iterator

import numpy as np

from sslax.data.sources import ImageDataset


class EpochSampler:
  """Which examples make up step s's batch, as a pure function of (seed, s).

  Every epoch is a fresh permutation of this process's examples drawn from
  numpy's Generator seeded with (seed, process_index, epoch); the incomplete last batch of an
  epoch is dropped. Because a batch depends only on its step, resuming at step s
  continues exactly where an uninterrupted run would be.

  Args:
    num_examples: examples held by this process.
    batch_size: examples per step on this process.
    seed: data seed.
    process_index: this process (each process shuffles its own part).
  """

  def __init__(self, num_examples: int, batch_size: int, seed: int, process_index: int = 0):
    if batch_size > num_examples:
      raise ValueError(f"Per-process batch size {batch_size} exceeds the {num_examples} examples available.")
    self.num_examples = num_examples
    self.batch_size = batch_size
    self.seed = seed
    self.process_index = process_index
    self.steps_per_epoch = num_examples // batch_size
    self._cached_epoch, self._cached_perm = -1, None

  def indices(self, step: int) -> np.ndarray:
    """Indices (into this process's examples) of the batch of `step`."""
    epoch, position = divmod(step, self.steps_per_epoch)
    if epoch != self._cached_epoch:
      rng = np.random.default_rng([self.seed, self.process_index, epoch])
      self._cached_epoch, self._cached_perm = epoch, rng.permutation(self.num_examples)
    return self._cached_perm[position * self.batch_size:(position + 1) * self.batch_size]


def prefetch(iterator: Iterator, size: int = 2) -> Iterator:
  """Runs `iterator` in a background thread, `size` items ahead.

  Exceptions in the producer are re-raised in the consumer. Stopping early is safe: the
  thread is a daemon and blocks at most on a full queue.
  """
  q: queue.Queue = queue.Queue(maxsize=size)
  sentinel = object()

  def producer():
    try:
      for item in iterator:
        q.put(item)
    except BaseException as e:  # Propagate to the training thread.
      q.put(e)
      return
    q.put(sentinel)

  threading.Thread(target=producer, daemon=True).start()
  while True:
    item = q.get()
    if item is sentinel:
      return
    if isinstance(item, BaseException):
      raise item
    yield item


def train_batches(dataset: ImageDataset, *, batch_size: int, seed: int, start_step: int,
                  process_index: int = 0, to_device: Callable | None = None,
                  prefetch_size: int = 2) -> Iterator[tuple[int, dict]]:
  """Yields (step, batch) from `start_step` on, forever.

  Args:
    dataset: this process's examples.
    batch_size: per-process batch size.
    seed: data seed.
    start_step: first step (resume point).
    process_index: this process.
    to_device: maps the host batch {'image', 'label', 'index'} to device arrays; run in the
      prefetch thread so the transfer overlaps the previous step.
    prefetch_size: batches prepared ahead.

  Returns:
    An iterator of (step, batch).
  """
  sampler = EpochSampler(len(dataset), batch_size, seed, process_index)

  def produce():
    step = start_step
    while True:
      idx = np.sort(sampler.indices(step))  # Sorted: contiguous reads; order inside a batch is irrelevant.
      batch = {"image": dataset.images[idx], "label": dataset.labels[idx],
               "index": dataset.indices[idx].astype(np.int32)}
      yield step, (to_device(batch) if to_device else batch)
      step += 1

  return prefetch(produce(), prefetch_size)
