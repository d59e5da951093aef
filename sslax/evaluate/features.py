"""Evaluation-mode features of a set of images, in global batches sharded over the mesh."""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from sslax import parallel
from sslax.data.preprocessing import preprocess


# 'grid_concat' keeps the tiles' layout: their features side by side in raster order (9 D), as
# the linear protocols of Zhang et al. (2016, 2017) and Goyal et al. (2019) keep a conv map's
# spatial layout (pooled to about 9k dimensions) rather than averaging it away.
REPRESENTATIONS = ("auto", "image", "grid", "grid_concat")


def grid_tile_size(config, image_size: int, representation: str = "auto") -> int:
  """Side of the 3x3 grid tiles that represent an `image_size` image; 0: the whole image.

  'image' is the whole image; 'grid' the average over the centre squares of the 3x3 grid
  cells ('grid_concat' their concatenation, with the same tiles); 'auto' is 'grid' for
  methods whose backbone is trained on tiles (Method.representation_tile_size > 0) and
  'image' for the others. A grid tile has the
  training tile's size relative to the view (tile_size / crop_size of image_size, at most a
  cell), so a 32x32 image of a method trained on 9-pixel tiles of 32-pixel views is seen as
  9 tiles of 9 pixels; 'grid' for other methods uses whole cells.

  Args:
    config: the pretraining config (method, augment.crop_size, the method's section).
    image_size: side of the evaluated images.
    representation: one of REPRESENTATIONS.

  Returns:
    The tile side in pixels, or 0.
  """
  from sslax.config_utils import check_choice
  from sslax.methods import method_class

  check_choice(representation, REPRESENTATIONS, "representation")
  trained = method_class(config.method).representation_tile_size(config)
  if representation == "image" or (representation == "auto" and not trained):
    return 0
  cell = image_size // 3
  if not trained:
    return cell
  return max(1, min(cell, round(trained * image_size / config.augment.crop_size)))


def grid_average(apply_fn: Callable[[jax.Array], jax.Array], x: jax.Array, tile_size: int,
                 concat: bool = False) -> jax.Array:
  """`apply_fn(x)`, or with tile_size > 0 the mean of `apply_fn` over x's 3x3 grid tiles.

  Args:
    apply_fn: (B', t, t, C) -> (B', D) features.
    x: (B, S, S, C) preprocessed images.
    tile_size: side of the centre square taken from each of the 3x3 cells of S // 3 pixels
      (no jitter, no gap beyond the cells' own); 0 applies apply_fn to x itself.
    concat: concatenate the tiles' features in raster order instead of averaging them.

  Returns:
    (B, D) features, or (B, 9 D) with concat.
  """
  if not tile_size:
    return apply_fn(x)
  b, cell = x.shape[0], x.shape[1] // 3
  lo = (cell - tile_size) // 2
  tiles = [x[:, r * cell + lo:r * cell + lo + tile_size, c * cell + lo:c * cell + lo + tile_size]
           for r in range(3) for c in range(3)]
  feats = apply_fn(jnp.concatenate(tiles)).reshape(9, b, -1)  # tile-major
  return jnp.moveaxis(feats, 0, 1).reshape(b, -1) if concat else feats.mean(axis=0)


def make_feature_fn(model, data_cfg, *, mesh: jax.sharding.Mesh, dtype: str = "float32",
                    image_size: int | None = None, output: str = "features", tile_size: int = 0) -> Callable:
  """Jitted `fn(variables, uint8_images) -> (B, D)` of an SSLModel in evaluation mode.

  Args:
    model: an SSLModel (or any module returning a dict with `output`).
    data_cfg: config.data (mean, std).
    mesh: the mesh the outputs are sharded over.
    dtype: the model's compute dtype.
    image_size: resize the images to this size first; None keeps them.
    output: the key of the model's output dict.
    tile_size: > 0 averages the features of the 3x3 grid tiles of this size (grid_average).
  """

  def features(variables: dict, images: jax.Array) -> jax.Array:
    if isinstance(images, dict):  # A table's columns go to the encoder as they are.
      return model.apply(variables, images, train=False)[output]
    x = preprocess(images, data_cfg.mean, data_cfg.std, image_size=image_size, dtype=dtype)
    return grid_average(lambda t: model.apply(variables, t, train=False)[output], x, tile_size)

  return jax.jit(features, out_shardings=parallel.batch_sharding(mesh))


def extract_features(feature_fn: Callable[[Any, jax.Array], jax.Array], variables: Any, images: np.ndarray,
                     batch_size: int, mesh: jax.sharding.Mesh) -> np.ndarray:
  """Features of every image, computed in global batches sharded over the mesh.

  Every process passes the same full `images`; each contributes its slice of every
  batch, and the features are gathered back to every process.

  Args:
    feature_fn: `fn(variables, global uint8 batch) -> (B, D)`, e.g. from make_feature_fn.
    variables: what feature_fn takes first (model variables, or a TrainState).
    images: uint8 (N, H, W, 3), identical on every process (or a streaming dataset's LazyImages,
      or a table's {'numeric', 'categorical'} columns).
    batch_size: global batch; rounded up to a multiple of the device count.
    mesh: the mesh.

  Returns:
    float32 (N, D) numpy array.
  """
  num_devices, nproc, pid = mesh.devices.size, jax.process_count(), jax.process_index()
  batch_size = -(-batch_size // num_devices) * num_devices
  per_process = batch_size // nproc
  out = []
  # Images are one array; a table's columns a dict of arrays with the same rows.
  rows = lambda fn: jax.tree.map(fn, images, is_leaf=lambda a: not isinstance(a, dict))  # noqa: E731
  total = len(jax.tree.leaves(images, is_leaf=lambda a: not isinstance(a, dict))[0])
  for start in range(0, total, batch_size):
    valid = min(batch_size, total - start)
    # Only this process's rows are read (a streaming dataset decodes them here, batch by batch).
    first = start + pid * per_process
    stop = max(first, min(first + per_process, start + valid))
    local = rows(lambda a: np.asarray(a[first:stop]))
    # Pad the last batch so one compiled shape serves every batch.
    local = jax.tree.map(lambda a: np.concatenate([a, np.zeros((per_process - len(a), *a.shape[1:]), a.dtype)])
                         if len(a) < per_process else a, local)
    feats = feature_fn(variables, parallel.to_global_batch({"x": local}, mesh)["x"])
    if nproc > 1:
      from jax.experimental import multihost_utils

      feats = multihost_utils.process_allgather(feats, tiled=True)
    out.append(np.asarray(feats)[:valid])
  return np.concatenate(out).astype(np.float32)
