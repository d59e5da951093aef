"""The one conversion from stored pixels to model input, shared by training, evaluation,
`load_pretrained` and fine-tuning, so a backbone always sees what it was trained on."""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp


def normalize(images: jax.Array, mean: Sequence[float], std: Sequence[float]) -> jax.Array:
  """(x - mean) / std per channel, for float images in [0, 1]."""
  return (images - jnp.asarray(mean, images.dtype)) / jnp.asarray(std, images.dtype)


def preprocess(images: jax.Array, mean: Sequence[float], std: Sequence[float], *, image_size: int | None = None,
               dtype=jnp.float32) -> jax.Array:
  """uint8 pixels (or float images already in [0, 1]) -> normalised model input.

  Args:
    images: (B, H, W, 3), uint8 in [0, 255] or float in [0, 1] (augmented views).
    mean, std: per-channel statistics of the training data (config.data.mean/std).
    image_size: resize (bilinear, antialiased) to image_size x image_size first; None keeps the size.
    dtype: the model's compute dtype (config.model.dtype).

  Returns:
    (B, S, S, 3) array of `dtype`.
  """
  x = images.astype(jnp.float32) / 255.0 if images.dtype == jnp.uint8 else images
  if image_size is not None and image_size != x.shape[1]:
    x = jax.image.resize(x, (x.shape[0], image_size, image_size, 3), "bilinear", antialias=True)
  return normalize(x, mean, std).astype(jnp.dtype(dtype))
