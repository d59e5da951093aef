"""Weighted k-nearest-neighbour classifier for evaluating frozen SSL features.

This is the protocol of Wu et al. 2018 (InstDisc) as used by DINO: features are
L2-normalised, each test example takes its k most cosine-similar training
examples, and each neighbour votes for its label with weight exp(sim / T).

Memory is bounded by processing test features in fixed-size chunks (the last
one padded, so one compiled function serves every chunk): the similarity matrix
is at most chunk_size x N_train, or chunk_size x N_train / num_devices per
device when a mesh is given. With a mesh the training features are sharded
along N_train; every device takes the top-k of its own shard and the
candidates are all-gathered and merged into the global top-k.

Ties are deterministic and independent of sharding: among equally similar
neighbours the one with the lower training index is taken first, and among
equally scored classes the lower class index wins.
"""
from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P


def _l2_normalize(x: jax.Array) -> jax.Array:
  # The floor keeps all-zero rows (chunk padding, train padding) at zero instead of NaN.
  norm = jnp.sqrt(jnp.sum(x * x, axis=-1, keepdims=True))
  return x / jnp.maximum(norm, 1e-12)


_normalize_jit = jax.jit(lambda x: _l2_normalize(x.astype(jnp.float32)))


def _similarities(q: jax.Array, x: jax.Array) -> jax.Array:
  # HIGHEST: accelerators otherwise may use bf16/tf32 passes, which reorders near neighbours.
  return jnp.dot(q, x.T, precision=lax.Precision.HIGHEST)


def _topk_sharded(q, train_x, train_y, *, kmax: int, n_train: int, mesh: Mesh):
  """Global top-kmax over train features sharded along N_train.

  Args:
    q: (B, D) normalised test chunk, replicated.
    train_x: (N_pad, D) normalised train features, N_pad a multiple of the mesh size.
    train_y: (N_pad,) train labels.
    kmax: number of neighbours.
    n_train: number of real train rows; rows at index >= n_train are padding.
    mesh: 1-D mesh whose axis shards train_x.

  Returns:
    (sims, labels), each (B, kmax), sorted by decreasing similarity.
  """
  axis = mesh.axis_names[0]

  def local_then_merge(q, x, y):
    n_local = x.shape[0]
    # A shard may hold fewer than kmax rows; the union of all shards still has N_pad >= kmax.
    k_local = min(kmax, n_local)
    s = _similarities(q, x)
    global_idx = lax.axis_index(axis) * n_local + jnp.arange(n_local)
    # Padding rows can never be neighbours: -inf ranks below every real similarity.
    s = jnp.where(global_idx[None, :] < n_train, s, -jnp.inf)
    s_top, i_top = lax.top_k(s, k_local)
    y_top = y[i_top]
    # Tiled gather along axis 1 concatenates the shards in device order, i.e. ascending global
    # index; with top_k preferring the lower position on ties, the merge breaks ties exactly as
    # an unsharded top_k over all N_train would.
    s_all = lax.all_gather(s_top, axis, axis=1, tiled=True)
    y_all = lax.all_gather(y_top, axis, axis=1, tiled=True)
    s_k, j = lax.top_k(s_all, kmax)
    return s_k, jnp.take_along_axis(y_all, j, axis=1)

  # check_vma=False: after the all_gather every device holds identical candidates and runs the
  # same deterministic merge, so the outputs are replicated, which out_specs=P() declares.
  return jax.shard_map(
      local_then_merge, mesh=mesh, in_specs=(P(), P(axis), P(axis)), out_specs=(P(), P()),
      check_vma=False)(q, train_x, train_y)


_similarities_jit = jax.jit(lambda q, x: _similarities(_l2_normalize(q.astype(jnp.float32)), x))


def _topk_host(sims: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
  """Exact top-k per row with the same tie rule as lax.top_k (lower index first), in O(N).

  XLA's CPU top_k sorts whole rows (about 90 s for 10k x 50k); numpy's introselect
  partition is linear. Ties at the k-th value are resolved towards lower indices.

  Returns:
    (values, indices), each (B, k), sorted by decreasing value then increasing index.
  """
  part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
  kth = np.take_along_axis(sims, part, axis=1).min(axis=1)
  idx = part
  # Rows where more elements equal the k-th value than were kept: take the lowest indices.
  n_ge = (sims >= kth[:, None]).sum(axis=1)
  for r in np.flatnonzero(n_ge > k):
    above = np.flatnonzero(sims[r] > kth[r])
    ties = np.flatnonzero(sims[r] == kth[r])[:k - len(above)]
    idx[r] = np.concatenate([above, ties])
  vals = np.take_along_axis(sims, idx, axis=1)
  order = np.lexsort((idx, -vals), axis=1)
  return np.take_along_axis(vals, order, axis=1), np.take_along_axis(idx, order, axis=1)


@functools.partial(jax.jit, static_argnames=("ks", "num_classes"))
def _vote(sims, labels, temperature, *, ks: tuple[int, ...], num_classes: int):
  """(len(ks), B) predictions from sorted neighbour similarities and labels (B, kmax)."""
  # Subtracting the best similarity rescales a row's scores by a positive constant (argmax
  # unchanged) and keeps exp finite for small temperatures (exp(1 / 0.01) overflows float32).
  weights = jnp.exp((sims - sims[:, :1]) / temperature)
  classes = jnp.arange(num_classes, dtype=labels.dtype)
  scores = jnp.zeros((sims.shape[0], num_classes), jnp.float32)
  preds = []
  prev = 0
  # Neighbours are sorted, so the votes for k are those for the previous k plus neighbours
  # prev..k-1: one pass over the kmax neighbours serves every k. A compare-and-sum (fused by
  # XLA, no (B, k, C) one-hot in memory) rather than scatter-add, which is non-deterministic on GPU.
  for k in ks:
    w, y = weights[:, prev:k], labels[:, prev:k]
    scores = scores + jnp.sum(jnp.where(y[:, :, None] == classes, w[:, :, None], 0.0), axis=1)
    preds.append(jnp.argmax(scores, axis=1).astype(jnp.int32))  # argmax: first max -> lower class.
    prev = k
  return jnp.stack(preds)


@functools.partial(jax.jit, static_argnames=("ks", "num_classes", "n_train", "mesh"))
def _classify_chunk(test_chunk, train_x, train_y, temperature, *, ks: tuple[int, ...],
                    num_classes: int, n_train: int, mesh: Mesh | None):
  """Predictions for one chunk of test features, for every k in ks.

  Args:
    test_chunk: (B, D) raw test features.
    train_x: (N_train or N_pad, D) normalised train features (sharded when mesh is given).
    train_y: matching int32 labels.
    temperature: scalar; traced so that changing it does not recompile.
    ks: sorted distinct neighbour counts.
    num_classes: number of classes.
    n_train: number of real train rows.
    mesh: optional 1-D mesh sharding train_x.

  Returns:
    (len(ks), B) int32 predicted labels.
  """
  kmax = ks[-1]
  q = _l2_normalize(test_chunk.astype(jnp.float32))
  if mesh is None:
    sims, idx = lax.top_k(_similarities(q, train_x), kmax)
    labels = train_y[idx]
  else:
    sims, labels = _topk_sharded(q, train_x, train_y, kmax=kmax, n_train=n_train, mesh=mesh)
  return _vote(sims, labels, temperature, ks=ks, num_classes=num_classes)


def _as_features(x, name: str) -> np.ndarray:
  x = np.asarray(x)
  if x.ndim != 2:
    raise ValueError(f"{name} must be 2-D (num_examples, dim), got shape {x.shape}.")
  if not np.issubdtype(x.dtype, np.floating):
    x = x.astype(np.float32)
  if not np.all(np.isfinite(x)):
    raise ValueError(f"{name} contains NaN or inf.")
  return x


def _as_labels(y, n: int, name: str, num_classes: int | None) -> np.ndarray:
  y = np.asarray(y)
  if y.ndim != 1 or y.shape[0] != n:
    raise ValueError(f"{name} must have shape ({n},) to match the features, got {y.shape}.")
  if not (np.issubdtype(y.dtype, np.integer) or y.dtype == np.bool_):
    raise ValueError(f"{name} must be integers, got dtype {y.dtype}.")
  if num_classes is not None and n and (y.min() < 0 or y.max() >= num_classes):
    raise ValueError(
        f"{name} must lie in [0, num_classes={num_classes}), got range [{y.min()}, {y.max()}].")
  return y.astype(np.int32)


def _check_ks(k: int | Sequence[int], n_train: int) -> tuple[int, ...]:
  ks = [k] if isinstance(k, (int, np.integer)) else list(k)
  if not ks:
    raise ValueError("k must be an int or a non-empty sequence of ints.")
  for kk in ks:
    if isinstance(kk, bool) or not isinstance(kk, (int, np.integer)) or kk < 1:
      raise ValueError(f"every k must be a positive int, got {kk!r}.")
    if kk > n_train:
      raise ValueError(f"k={kk} is larger than the number of train examples ({n_train}).")
  return tuple(sorted({int(kk) for kk in ks}))


def knn_classify(train_features, train_labels, test_features, *, num_classes: int,
                 k: int | Sequence[int] = 200, temperature: float = 0.1,
                 chunk_size: int = 256, mesh: Mesh | None = None) -> dict[int, np.ndarray]:
  """Weighted kNN predictions for test features.

  Features are L2-normalised (cosine similarity). Each test feature takes its k
  most similar train features; the score of a class is the sum of
  exp(sim / temperature) over the neighbours with that label (Wu et al. 2018,
  DINO), and the prediction is the best-scoring class. Top-max(k) is computed
  once and every smaller k is read off the sorted neighbours.

  Args:
    train_features: (N_train, D) array.
    train_labels: (N_train,) ints in [0, num_classes).
    test_features: (N_test, D) array.
    num_classes: number of classes.
    k: number of neighbours, or several at once.
    temperature: vote temperature T > 0.
    chunk_size: test features per step; the similarity matrix is at most
      chunk_size x N_train (divided by the number of devices with a mesh).
    mesh: optional 1-D mesh (axis 'data'); the train features are sharded over
      it along N_train, padded with rows that are never neighbours when the
      mesh size does not divide N_train.

  Returns:
    {k: (N_test,) int32 predicted labels} for every distinct k, ascending.

  Raises:
    ValueError: on mismatched shapes, labels out of range, k outside
      [1, N_train], non-positive temperature or chunk_size, or a mesh that is
      not 1-D.
  """
  if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
    raise ValueError(f"num_classes must be a positive int, got {num_classes!r}.")
  train_x = _as_features(train_features, "train_features")
  test_x = _as_features(test_features, "test_features")
  n_train, n_test = train_x.shape[0], test_x.shape[0]
  if train_x.shape[1] != test_x.shape[1]:
    raise ValueError(f"train_features have dim {train_x.shape[1]} but test_features have dim "
                     f"{test_x.shape[1]}.")
  train_y = _as_labels(train_labels, n_train, "train_labels", num_classes)
  ks = _check_ks(k, n_train)
  if not temperature > 0:
    raise ValueError(f"temperature must be > 0, got {temperature}.")
  if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
    raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}.")
  if mesh is not None and len(mesh.axis_names) != 1:
    raise ValueError(f"mesh must be 1-D (axis 'data'), got axes {mesh.axis_names}.")
  if n_test == 0:
    return {kk: np.zeros((0,), np.int32) for kk in ks}

  if mesh is None:
    train_x_dev = _normalize_jit(jnp.asarray(train_x))
    train_y_dev = jnp.asarray(train_y)
  else:
    num_devices = mesh.devices.size
    pad = -n_train % num_devices
    if pad:
      # Zero rows, masked to sim = -inf inside the shard_map so they are never neighbours.
      train_x = np.concatenate([train_x, np.zeros((pad, train_x.shape[1]), train_x.dtype)])
      train_y = np.concatenate([train_y, np.zeros((pad,), train_y.dtype)])
    sharding = NamedSharding(mesh, P(mesh.axis_names[0]))
    train_x_dev = _normalize_jit(jax.device_put(train_x, sharding))
    train_y_dev = jax.device_put(train_y, sharding)

  # No point padding a small test set up to a large chunk.
  chunk = min(int(chunk_size), n_test)
  temp = jnp.float32(temperature)
  outputs = []
  for start in range(0, n_test, chunk):
    block = test_x[start:start + chunk]
    if block.shape[0] < chunk:
      # Same shape for every chunk -> one compilation; padded rows' predictions are dropped.
      block = np.concatenate([block, np.zeros((chunk - block.shape[0], block.shape[1]), block.dtype)])
    if mesh is None and jax.default_backend() == "cpu":
      # On CPU the top-k runs on the host (linear-time partition; see _topk_host).
      sims, idx = _topk_host(np.asarray(_similarities_jit(block, train_x_dev)), ks[-1])
      outputs.append(_vote(sims, train_y[idx], temp, ks=ks, num_classes=int(num_classes)))
      continue
    # Dispatch is asynchronous: all chunks are queued before any result is read back.
    outputs.append(_classify_chunk(block, train_x_dev, train_y_dev, temp, ks=ks,
                                   num_classes=int(num_classes), n_train=n_train, mesh=mesh))
  # addressable_data(0): the result is replicated, and this also works when the mesh spans processes.
  preds = np.concatenate([np.asarray(o.addressable_data(0)) for o in outputs], axis=1)[:, :n_test]
  return {kk: preds[i] for i, kk in enumerate(ks)}


def knn_accuracy(train_features, train_labels, test_features, test_labels, **kwargs) -> dict[int, float]:
  """Top-1 accuracy of the weighted kNN classifier for each k.

  Args:
    train_features: (N_train, D) array.
    train_labels: (N_train,) ints in [0, num_classes).
    test_features: (N_test, D) array.
    test_labels: (N_test,) ints.
    **kwargs: passed to knn_classify (num_classes is required there).

  Returns:
    {k: accuracy in [0, 1]}.
  """
  test_x = _as_features(test_features, "test_features")
  # Checked before the (possibly long) classification so a bad label fails fast.
  test_y = _as_labels(test_labels, test_x.shape[0], "test_labels", kwargs.get("num_classes"))
  if test_y.shape[0] == 0:
    raise ValueError("test_features is empty: accuracy is undefined.")
  preds = knn_classify(train_features, train_labels, test_x, **kwargs)
  return {kk: float(np.mean(p == test_y)) for kk, p in preds.items()}
