"""Counting visual primitives (Noroozi, Pirsiavash & Favaro 2017): the features of an image
equal the sum of the features of its four tiles."""
from __future__ import annotations

import zlib

import jax
import jax.numpy as jnp

from sslax import parallel
from sslax.config_utils import ConfigError, Field
from sslax.methods.base import LossOutput, Method
from sslax.methods.common import method_keys

# Downsampling filters, one drawn per image: the paper varies the filter so that the network
# cannot tell the downsampled image from a tile by its interpolation artefacts.
DOWNSAMPLING = ("box", "linear", "cubic", "lanczos3")


def quadrants(images: jax.Array) -> list[jax.Array]:
  """The 2x2 tiles of (n, S, S, C) images (S even), row-major: 4 arrays of (n, S/2, S/2, C)."""
  h = images.shape[1] // 2
  return [images[:, :h, :h], images[:, :h, h:], images[:, h:, :h], images[:, h:, h:]]


def downsample(images: jax.Array, keys: jax.Array) -> jax.Array:
  """Each (n, S, S, C) image halved to (S/2, S/2) by a filter drawn from DOWNSAMPLING with its key."""
  n, s, _, c = images.shape
  h = s // 2
  box = images.reshape(n, h, 2, h, 2, c).mean(axis=(2, 4))
  resized = [box] + [jax.image.resize(images, (n, h, h, c), method, antialias=True) for method in DOWNSAMPLING[1:]]
  choice = jax.vmap(lambda k: jax.random.randint(k, (), 0, len(DOWNSAMPLING)))(keys)
  return jnp.stack(resized)[choice, jnp.arange(n)]


class Counting(Method):
  """Counting: phi(D(x)) = sum_j phi(T_j(x)), with a contrastive term against another image.

  One augmented view x per image (crop and flip); D halves its resolution and T_1..T_4 are
  its four quadrants, so all five inputs have the same size and go through the network as
  one batch. phi is the projector's output after a ReLU (non-negative "counts" of visual
  primitives). The loss of the paper:

    |phi(D(x)) - t(x)|^2 + max(0, M - |phi(D(y)) - t(x)|^2),   t(x) = sum_j phi(T_j(x)),

  where y is the next image of the global batch (a different image, so phi = 0, which
  satisfies the first term, costs M in the second). Each image's downsampling filter is
  drawn from box / bilinear / bicubic / Lanczos (antialiased). The representation is the
  backbone's pooled features; the probe sees those of D(x).
  """

  name = "counting"
  num_views = 1
  config_fields = {
      "margin": Field(10.0, "M, the margin of the contrastive term on the squared distance", gt=0),
  }

  @classmethod
  def validate_config(cls, config) -> None:
    super().validate_config(config)
    if config.augment.crop_size % 2 or config.augment.crop_size < 4:
      raise ConfigError(f"counting cuts each view into 2x2 tiles: config.augment.crop_size="
                        f"{config.augment.crop_size} must be even and at least 4.")

  def loss(self, model, params, batch_stats, method_state, views, *, step, axis_name, batch=None):
    del batch
    x = views[0]
    n = x.shape[0]
    keys = method_keys(self.config, step, n, axis_name, stream=zlib.crc32(self.name.encode()))
    inputs = jnp.concatenate([downsample(x.astype(jnp.float32), keys).astype(x.dtype)] + quadrants(x))
    out, updates = model.apply({"params": params, "batch_stats": batch_stats}, inputs, train=True, predict=False,
                               mutable=["batch_stats"])
    phi = jax.nn.relu(out["projection"])
    whole, tiles = phi[:n], phi[n:].reshape(4, n, -1).sum(axis=0)
    # y = the next image of the global batch: roll the gathered rows, keep this device's block.
    others = jnp.roll(parallel.all_gather(whole, axis_name), -1, axis=0)
    others = jax.lax.dynamic_slice_in_dim(others, parallel.device_offset(n, axis_name), n)
    positive = jnp.sum(jnp.square(whole - tiles), axis=-1)
    negative = jnp.sum(jnp.square(others - tiles), axis=-1)
    hinge = jax.nn.relu(self.settings.margin - negative)
    loss = parallel.global_mean(positive + hinge, axis_name)
    return LossOutput(loss=loss, batch_stats=updates.get("batch_stats", batch_stats), method_state=method_state,
                      features=out["features"][:n], embeddings=whole,
                      metrics={"count_distance": parallel.global_mean(positive, axis_name),
                               "contrast_distance": parallel.global_mean(negative, axis_name)})
