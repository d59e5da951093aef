"""Deterministic, resumable batch sampling with background prefetch to devices."""
from __future__ import annotations

import queue
import threading
from typing import Callable, Iterator

import numpy as np

from sslax.data.sources import ImageDataset
from sslax.data.tabular import TableDataset


class EpochSampler:
  """Which examples make up step s's global batch, as a pure function of (seed, s).

  Every epoch is a fresh permutation of all examples, drawn from numpy's Generator seeded
  with (seed, 0, epoch); the incomplete last batch of an epoch is dropped. The global batch
  of a step is the same whatever the number of processes: process p of P takes rows
  [p * B/P, (p+1) * B/P) of it (sorted by example index, for contiguous reads), so a run as
  2 processes trains on the same batches, in the same rows, as a run as 1. Because a batch
  depends only on its step, resuming at step s continues exactly where an uninterrupted run
  would be. (The 0 in the seed is where the process index used to be, when each process
  shuffled its own part; keeping it keeps single-process batches as they were.)

  Args:
    num_examples: examples in the whole dataset (every process indexes the same dataset).
    batch_size: the global batch size (all processes together).
    seed: data seed.
    process_index, process_count: this process and how many there are.
  """

  def __init__(self, num_examples: int, batch_size: int, seed: int, process_index: int = 0,
               process_count: int = 1):
    if batch_size > num_examples:
      raise ValueError(f"Batch size {batch_size} exceeds the {num_examples} examples available.")
    if batch_size % process_count:
      raise ValueError(f"Batch size {batch_size} is not divisible by the {process_count} processes.")
    self.num_examples = num_examples
    self.batch_size = batch_size
    self.seed = seed
    self.process_index = process_index
    self.process_count = process_count
    self.steps_per_epoch = num_examples // batch_size
    self._cached_epoch, self._cached_perm = -1, None

  def global_indices(self, step: int) -> np.ndarray:
    """Sorted dataset indices of the whole global batch of `step`."""
    epoch, position = divmod(step, self.steps_per_epoch)
    if epoch != self._cached_epoch:
      rng = np.random.default_rng([self.seed, 0, epoch])
      self._cached_epoch, self._cached_perm = epoch, rng.permutation(self.num_examples)
    return np.sort(self._cached_perm[position * self.batch_size:(position + 1) * self.batch_size])

  def indices(self, step: int) -> np.ndarray:
    """Dataset indices of this process's rows of the global batch of `step`."""
    local = self.batch_size // self.process_count
    return self.global_indices(step)[self.process_index * local:(self.process_index + 1) * local]


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


def train_batches(dataset: ImageDataset | TableDataset, *, batch_size: int, seed: int, start_step: int,
                  process_index: int = 0, process_count: int = 1, to_device: Callable | None = None,
                  prefetch_size: int = 2) -> Iterator[tuple[int, dict]]:
  """Yields (step, this process's rows of the global batch) from `start_step` on, forever.

  Args:
    dataset: the whole dataset (the same on every process; each reads only its rows).
    batch_size: the global batch size.
    seed: data seed.
    start_step: first step (resume point).
    process_index, process_count: this process and how many there are.
    to_device: maps the host batch ({'image', 'label', 'index'}, or a table's rows and
      marginal draws) to device arrays; run in the
      prefetch thread so the transfer overlaps the previous step.
    prefetch_size: batches prepared ahead.

  Returns:
    An iterator of (step, batch).
  """
  sampler = EpochSampler(len(dataset), batch_size, seed, process_index, process_count)

  def produce():
    step = start_step
    while True:
      idx = sampler.indices(step)
      batch = dataset.batch_rows(idx, seed=seed, step=step, global_batch=batch_size,
                                 first=process_index * (batch_size // process_count))
      yield step, (to_device(batch) if to_device else batch)
      step += 1

  return prefetch(produce(), prefetch_size)
