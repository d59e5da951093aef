"""Denoising autoencoder (Vincent, Larochelle, Bengio & Manzagol 2008): reconstruct the clean image from a corrupted one."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from sslax import parallel
from sslax.config_utils import ConfigError, Field
from sslax.methods.base import LossOutput, Method
from sslax.methods.common import check_decoder_fits_crop, method_keys


def corrupt(images: jax.Array, keys: jax.Array, noise: str, level: float) -> jax.Array:
  """Corrupted copies of normalised images, one independent corruption per example.

  Args:
    images: (n, H, W, C) normalised images (0 is the dataset's mean colour).
    keys: (n, 2) per-example keys.
    noise: 'masking' (each pixel, all channels, set to the mean colour with probability
      `level`, the paper's masking noise) or 'gaussian' (additive isotropic noise of std
      `level` in normalised units).
    level: masking fraction or noise std.

  Returns:
    (n, H, W, C) float32 corrupted images.
  """
  images = images.astype(jnp.float32)
  if noise == "masking":
    mask = jax.vmap(lambda k: jax.random.bernoulli(k, level, images.shape[1:3] + (1,)))(keys)
    return jnp.where(mask, 0.0, images)
  if noise == "gaussian":
    return images + level * jax.vmap(lambda k: jax.random.normal(k, images.shape[1:], jnp.float32))(keys)
  raise ValueError(f"Unknown noise {noise!r}; valid choices: masking, gaussian.")


class DenoisingAutoencoder(Method):
  """Minimise the squared error between the decoder's output for a corrupted view and the clean view.

  One augmented view per image (crop and flip) is corrupted by masking noise (a fraction
  `corruption` of the pixels set to the mean colour; the paper's choice) or additive
  Gaussian noise, encoded by the backbone to its pooled feature vector and decoded by a
  convolutional decoder (sslax.models.ConvDecoder) back to the view's size. The loss is the
  mean squared error over all pixels in normalised units (the paper's squared-error loss for
  real-valued inputs). The representation evaluated downstream is the backbone's pooled
  features of clean images; the online probe sees those of the corrupted views.
  """

  name = "denoising_ae"
  heads = ("decoder",)
  num_views = 1
  config_fields = {
      "noise": Field("masking", "the corruption", choices=("masking", "gaussian")),
      "corruption": Field(0.25, "masking: fraction of pixels masked; gaussian: noise std (normalised units)", ge=0),
  }

  @classmethod
  def validate_config(cls, config) -> None:
    super().validate_config(config)
    if config.denoising_ae.noise == "masking" and config.denoising_ae.corruption > 1:
      raise ConfigError(f"config.denoising_ae.corruption={config.denoising_ae.corruption} is a masking fraction: "
                        "it must be in [0, 1].")
    check_decoder_fits_crop(config)

  def _corrupt(self, images, keys):
    return corrupt(images, keys, self.settings.noise, self.settings.corruption).astype(images.dtype)

  def loss(self, model, params, batch_stats, method_state, views, *, step, axis_name, batch=None):
    del batch
    clean = views[0]
    keys = method_keys(self.config, step, clean.shape[0], axis_name, stream=0xDAE)
    out, updates = model.apply({"params": params, "batch_stats": batch_stats}, self._corrupt(clean, keys), train=True,
                               pretext=True, mutable=["batch_stats"])
    squared = jnp.square(out["reconstruction"] - clean.astype(jnp.float32)).mean(axis=(1, 2, 3))
    loss = parallel.global_mean(squared, axis_name)
    return LossOutput(loss=loss, batch_stats=updates.get("batch_stats", batch_stats), method_state=method_state,
                      features=out["features"], embeddings=out["features"], metrics={"reconstruction_mse": loss})

  def preview(self, model, variables, images, keys):
    corrupted = self._corrupt(images, keys)
    return [corrupted, model.apply(variables, corrupted, train=False, pretext=True)["reconstruction"]]
