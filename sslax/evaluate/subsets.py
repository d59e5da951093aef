"""Class-balanced labelled subsets for semi-supervised fine-tuning (1%, 10%, ...).

The indices are written as JSON into the evaluation workdir, so any run can be repeated
on exactly the same examples (and a rerun reads them back instead of redrawing).
"""
from __future__ import annotations

import json
import os

import numpy as np


def class_balanced_subset(labels: np.ndarray, fraction: float, seed: int = 0) -> np.ndarray:
  """Sorted indices of `fraction` of the examples, the same number from every class.

  Args:
    labels: int (N,) class labels of the training split.
    fraction: in (0, 1]; each class contributes round(fraction * N / num_classes) examples
      (at least 1, at most all of that class).
    seed: the draw's seed; the same seed gives the same subset.

  Returns:
    int64 sorted indices into `labels`.
  """
  if not 0 < fraction <= 1:
    raise ValueError(f"Label fraction must be in (0, 1]; got {fraction}.")
  labels = np.asarray(labels)
  classes = np.unique(labels[labels >= 0])
  per_class = max(1, int(round(fraction * len(labels) / len(classes))))
  rng = np.random.default_rng(seed)
  chosen = []
  for c in classes:
    members = np.flatnonzero(labels == c)
    chosen.append(rng.choice(members, size=min(per_class, len(members)), replace=False))
  return np.sort(np.concatenate(chosen)).astype(np.int64)


def stratified_subset(labels: np.ndarray, fraction: float, seed: int = 0) -> np.ndarray:
  """Sorted indices of `fraction` of the examples, drawn within each class in proportion to
  its size (the class frequencies of the split are kept: what an accuracy on an imbalanced
  test split, such as Adult's 76/24, needs; on balanced data it is class_balanced_subset).

  Args:
    labels: int (N,) class labels.
    fraction: in (0, 1]; each class c contributes max(1, round(fraction * N_c)) examples.
    seed: the draw's seed.

  Returns:
    int64 sorted indices into `labels`.
  """
  if not 0 < fraction <= 1:
    raise ValueError(f"Label fraction must be in (0, 1]; got {fraction}.")
  labels = np.asarray(labels)
  rng = np.random.default_rng(seed)
  chosen = []
  for c in np.unique(labels[labels >= 0]):
    members = np.flatnonzero(labels == c)
    chosen.append(rng.choice(members, size=max(1, int(round(fraction * len(members)))), replace=False))
  return np.sort(np.concatenate(chosen)).astype(np.int64)


def subset_path(workdir: str, fraction: float, seed: int) -> str:
  return os.path.join(workdir, f"subset_{fraction * 100:g}pct_seed{seed}.json")


def load_or_create_subset(workdir: str, labels: np.ndarray, fraction: float, seed: int, split: str) -> np.ndarray:
  """The subset's indices from `<workdir>/subset_<pct>pct_seed<seed>.json`, drawn and written if absent.

  Args:
    workdir: evaluation workdir.
    labels: labels of the (full) training split the indices refer to.
    fraction: label fraction.
    seed: draw seed.
    split: name of the split the indices refer to (recorded and checked).

  Returns:
    int64 sorted indices.
  """
  path = subset_path(workdir, fraction, seed)
  if os.path.exists(path):
    with open(path) as f:
      saved = json.load(f)
    if saved["split"] != split or saved["num_examples"] != len(labels):
      raise ValueError(f"{path} was drawn from split {saved['split']!r} with {saved['num_examples']} examples, "
                       f"not {split!r} with {len(labels)}; use another eval workdir.")
    return np.asarray(saved["indices"], np.int64)
  indices = class_balanced_subset(labels, fraction, seed)
  os.makedirs(workdir, exist_ok=True)
  with open(path, "w") as f:
    json.dump({"split": split, "num_examples": int(len(labels)), "fraction": fraction, "seed": seed,
               "indices": indices.tolist()}, f)
  return indices
