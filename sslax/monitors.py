"""Training monitors: collapse statistics of the embeddings (computed inside the step), the
collapse warning, the periodic kNN evaluation of the backbone, and the method's preview PNG."""
from __future__ import annotations

import math
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from sslax.data import ImageDataset
from sslax.data.preprocessing import preprocess
from sslax.evaluate.features import extract_features, grid_tile_size, make_feature_fn
from sslax.losses import l2_normalize
from sslax.parallel import global_sum


def embedding_std(z: jax.Array, axis_name: str | None = None) -> jax.Array:
  """Mean per-dimension std of L2-normalised embeddings over the global batch.

  A collapse monitor (Chen & He 2021): about 1/sqrt(d) when embeddings spread over the
  sphere, near 0 when they collapse to a point.

  Args:
    z: (n_local, d) embeddings.
    axis_name: mesh axis of the batch, or None.

  Returns:
    Scalar, identical on every device.
  """
  z = l2_normalize(z.astype(jnp.float32))
  n = global_sum(jnp.float32(z.shape[0]), axis_name)
  mean = global_sum(jnp.sum(z, axis=0), axis_name) / n
  var = global_sum(jnp.sum(jnp.square(z - mean), axis=0), axis_name) / n
  return jnp.mean(jnp.sqrt(jnp.maximum(var, 0.0)))


def effective_rank(z: jax.Array, axis_name: str | None = None) -> jax.Array:
  """RankMe effective rank (Garrido et al. 2023) of the global batch of embeddings.

  exp(entropy(p)), p the singular values of the (N, d) embedding matrix divided by their
  sum: d when every direction is used equally, 1 for a rank-one (collapsed) batch. The
  singular values are the square roots of the eigenvalues of Z^T Z, which sums over devices.

  Args:
    z: (n_local, d) embeddings.
    axis_name: data axis, or None.

  Returns:
    Scalar in [1, min(N, d)], identical on every device.
  """
  return rank_of_gram(gram_matrix(z, axis_name))


def gram_matrix(z: jax.Array, axis_name: str | None = None) -> jax.Array:
  """Z^T Z of the global batch of (n_local, d) embeddings z, summed over devices: (d, d)."""
  z = z.astype(jnp.float32)
  return global_sum(jnp.einsum("ni,nj->ij", z, z, precision=jax.lax.Precision.HIGHEST), axis_name)


def rank_of_gram(gram: jax.Array) -> jax.Array:
  """RankMe effective rank from the Gram matrix Z^T Z (no collectives: see effective_rank)."""
  singular = jnp.sqrt(jnp.maximum(jnp.linalg.eigvalsh(gram), 0.0))
  p = singular / jnp.maximum(jnp.sum(singular), 1e-12) + 1e-7  # The epsilon of RankMe's reference code.
  return jnp.exp(-jnp.sum(p * jnp.log(p)))


def warn_if_collapsing(metrics: dict[str, float], fraction: float, step: int, min_rank: float = 0.0) -> bool:
  """Logs a warning when the embeddings look collapsed.

  Two signs are checked: the embedding std below `fraction` of its spread-out value
  1/sqrt(d) (complete collapse), and the effective rank below `min_rank` (dimensional
  collapse, where the std can stay high while the batch spans only a few directions).

  Args:
    metrics: one logged record (`embedding_std_ratio`, `effective_rank`).
    fraction: std-ratio threshold; 0 disables that check.
    step: the step, for the message.
    min_rank: effective-rank threshold; 0 disables that check.

  Returns:
    True when a warning was logged.
  """
  ratio = metrics.get("embedding_std_ratio")
  rank = metrics.get("effective_rank", float("nan"))
  low_std = ratio is not None and bool(fraction) and ratio < fraction
  low_rank = bool(min_rank) and math.isfinite(rank) and rank < min_rank
  if not (low_std or low_rank):
    return False
  logging.warning("Possible collapse at step %d: embedding std is %.3f x 1/sqrt(d) (warning below %.2f), "
                  "effective rank %.1f (warning below %.1f). Check the learning rate, the momentum/temperature "
                  "settings and the augmentations.", step, float("nan") if ratio is None else ratio, fraction,
                  rank, min_rank)
  return True


class KNNMonitor:
  """Weighted kNN top-1 of the current backbone on the eval split (train split as memory).

  Args:
    config: the run config (`knn`, `data`, `model.dtype`).
    model: the SSLModel being trained.
    mesh: the training mesh (features are extracted sharded over it).
    train_data: the full training split (every process passes all of it).
    test_data: the evaluation split.
  """

  def __init__(self, config, model, mesh: jax.sharding.Mesh, train_data: ImageDataset, test_data: ImageDataset):
    knn_cfg = config.knn
    self.config, self.mesh = config, mesh
    # Inputs are images, or a table's {'numeric', 'categorical'} columns.
    limit = lambda d, n: (d.inputs, d.labels) if n is None else (jax.tree.map(lambda a: a[:n], d.inputs),  # noqa: E731
                                                                 d.labels[:n])
    self.train_images, self.train_labels = limit(train_data, knn_cfg.max_train_examples)
    self.test_images, self.test_labels = limit(test_data, knn_cfg.max_test_examples)
    captions = getattr(test_data, "captions", None)  # Image-text datasets: for retrieval at the end.
    self.test_captions = captions if captions is None or knn_cfg.max_test_examples is None else \
        captions[:knn_cfg.max_test_examples]
    self.num_classes = train_data.num_classes or int(np.asarray(train_data.labels).max()) + 1
    tile = 0
    if not isinstance(self.train_images, dict):
      tile = grid_tile_size(config, knn_cfg.image_size or self.train_images.shape[1])
    self.feature_fn = make_feature_fn(model, config.data, mesh=mesh, dtype=config.model.dtype,
                                      image_size=knn_cfg.image_size, tile_size=tile)

  def __call__(self, state) -> dict[str, float]:
    """{'knn_top1', 'knn_time_s'} of the TrainState's online backbone."""
    from sslax.evaluate.knn import knn_accuracy

    knn_cfg = self.config.knn
    start = time.time()
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    train_f = extract_features(self.feature_fn, variables, self.train_images, knn_cfg.batch_size, self.mesh)
    test_f = extract_features(self.feature_fn, variables, self.test_images, knn_cfg.batch_size, self.mesh)
    acc = knn_accuracy(train_f, self.train_labels, test_f, self.test_labels, num_classes=self.num_classes,
                       k=knn_cfg.k, temperature=knn_cfg.temperature, chunk_size=knn_cfg.chunk_size)
    return {"knn_top1": float(acc[knn_cfg.k]), "knn_time_s": time.time() - start}


def write_method_preview(setup, state, images: np.ndarray, path: str) -> str | None:
  """Writes the method's preview (Method.preview: corrupted inputs, reconstructions, ...) as a PNG grid.

  Each row is one image, resized to the training crop size: the original, then the
  method's columns. Runs on the calling process's first device with a host copy of the
  (replicated) parameters.

  Args:
    setup: the run's Setup.
    state: the trained TrainState.
    images: uint8 (n, H, W, 3) evaluation images.
    path: PNG path to write.

  Returns:
    `path`, or None when the method has no preview.
  """
  from PIL import Image

  from sslax import augment
  from sslax.augment.grid import view_grid
  from sslax.methods import Method

  method, config = setup.method, setup.config
  if type(method).preview is Method.preview:
    return None
  host = lambda tree: jax.tree.map(lambda x: np.asarray(x.addressable_data(0)), tree)
  variables = {"params": host(state.params), "batch_stats": host(state.batch_stats)}
  mean, std = np.asarray(config.data.mean, np.float32), np.asarray(config.data.std, np.float32)

  @jax.jit
  def columns(variables, images):
    x = preprocess(images, config.data.mean, config.data.std, image_size=config.augment.crop_size,
                   dtype=config.model.dtype)
    keys = augment.example_keys(config.seed, 0, jnp.arange(images.shape[0]))
    return [x] + method.preview(setup.model, variables, x, keys)

  shown = [np.clip(np.asarray(c, np.float32) * std + mean, 0.0, 1.0) for c in columns(variables, images)]
  grid = view_grid(np.round(shown[0] * 255).astype(np.uint8), shown[1:])
  Image.fromarray(grid).save(path)
  return path
