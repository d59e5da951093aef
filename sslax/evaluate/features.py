"""Evaluation-mode features of a set of images, in global batches sharded over the mesh."""
from __future__ import annotations

from typing import Any, Callable

import jax
import numpy as np

from sslax import parallel
from sslax.data.preprocessing import preprocess


def make_feature_fn(model, data_cfg, *, mesh: jax.sharding.Mesh, dtype: str = "float32",
                    image_size: int | None = None, output: str = "features") -> Callable:
  """Jitted `fn(variables, uint8_images) -> (B, D)` of an SSLModel in evaluation mode.

  Args:
    model: an SSLModel (or any module returning a dict with `output`).
    data_cfg: config.data (mean, std).
    mesh: the mesh the outputs are sharded over.
    dtype: the model's compute dtype.
    image_size: resize the images to this size first; None keeps them.
    output: the key of the model's output dict.
  """

  def features(variables: dict, images: jax.Array) -> jax.Array:
    x = preprocess(images, data_cfg.mean, data_cfg.std, image_size=image_size, dtype=dtype)
    return model.apply(variables, x, train=False)[output]

  return jax.jit(features, out_shardings=parallel.batch_sharding(mesh))


def extract_features(feature_fn: Callable[[Any, jax.Array], jax.Array], variables: Any, images: np.ndarray,
                     batch_size: int, mesh: jax.sharding.Mesh) -> np.ndarray:
  """Features of every image, computed in global batches sharded over the mesh.

  Every process passes the same full `images`; each contributes its slice of every
  batch, and the features are gathered back to every process.

  Args:
    feature_fn: `fn(variables, global uint8 batch) -> (B, D)`, e.g. from make_feature_fn.
    variables: what feature_fn takes first (model variables, or a TrainState).
    images: uint8 (N, H, W, 3), identical on every process.
    batch_size: global batch; rounded up to a multiple of the device count.
    mesh: the mesh.

  Returns:
    float32 (N, D) numpy array.
  """
  num_devices, nproc, pid = mesh.devices.size, jax.process_count(), jax.process_index()
  batch_size = -(-batch_size // num_devices) * num_devices
  per_process = batch_size // nproc
  out = []
  for start in range(0, len(images), batch_size):
    chunk = images[start:start + batch_size]
    valid = len(chunk)
    if valid < batch_size:  # Pad the last batch so one compiled shape serves every batch.
      chunk = np.concatenate([chunk, np.zeros((batch_size - valid, *chunk.shape[1:]), chunk.dtype)])
    local = chunk[pid * per_process:(pid + 1) * per_process]
    feats = feature_fn(variables, parallel.to_global_batch({"image": local}, mesh)["image"])
    if nproc > 1:
      from jax.experimental import multihost_utils

      feats = multihost_utils.process_allgather(feats, tiled=True)
    out.append(np.asarray(feats)[:valid])
  return np.concatenate(out).astype(np.float32)
