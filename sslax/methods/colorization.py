"""Colourisation (Zhang, Isola & Efros 2016): predict the ab colour channels of CIE Lab from L."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from sslax import parallel
from sslax.augment import color
from sslax.config_utils import ConfigError, Field
from sslax.methods.base import LossOutput, Method
from sslax.methods.common import check_decoder_fits_crop


def lab_of_views(images: jax.Array, config) -> jax.Array:
  """(n, H, W, 3) Lab of normalised views (config.data.mean/std undo the normalisation)."""
  return color.rgb_to_lab(color.unnormalize(images, config.data.mean, config.data.std))


def pixel_cross_entropy(logits: jax.Array, targets: jax.Array, weights: jax.Array | None = None) -> jax.Array:
  """(n,) per-image mean over pixels of -w * sum_q targets_q log softmax(logits)_q.

  Args:
    logits: (n, H, W, Q).
    targets: (n, H, W, Q) distributions.
    weights: (n, H, W) per-pixel weights, or None.
  """
  ce = -jnp.sum(targets * jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1), axis=-1)
  if weights is not None:
    ce = ce * weights
  return ce.mean(axis=(1, 2))


def colourised(lightness: jax.Array, ab_logits: jax.Array, config, temperature: float) -> jax.Array:
  """Normalised RGB images from L (0-100) and ab logits decoded by the annealed mean."""
  ab = color.annealed_mean(ab_logits, jnp.asarray(color.ab_bin_centres()), temperature)
  rgb = color.lab_to_rgb(jnp.concatenate([lightness, ab], axis=-1))
  return (rgb - jnp.asarray(config.data.mean)) / jnp.asarray(config.data.std)


def grey(lightness: jax.Array, config) -> jax.Array:
  """Normalised RGB images of L alone (a = b = 0): what the network sees."""
  rgb = color.lab_to_rgb(jnp.concatenate([lightness, jnp.zeros(lightness.shape[:-1] + (2,))], axis=-1))
  return (rgb - jnp.asarray(config.data.mean)) / jnp.asarray(config.data.std)


def check_dense_decoder(config, name: str, out_channels) -> None:
  """The decoder must produce `out_channels` per pixel at the crop's size (clear ConfigErrors)."""
  decoder = config.model.decoder
  got = decoder.get("out_channels", 3)
  got = tuple(got) if isinstance(got, (tuple, list)) else got
  if got != out_channels:
    raise ConfigError(f"{name} predicts {out_channels} logits per pixel: set config.model.decoder.out_channels="
                      f"{out_channels} (got {got}).")
  check_decoder_fits_crop(config)


class Colorization(Method):
  """Per-pixel classification of the ab colour of each pixel over Q quantised bins, from L.

  One augmented view per image (crop and flip, no colour jitter) is converted to CIE Lab on
  device (sslax.augment.color). The backbone sees only L (config.model.input='lightness',
  so evaluation feeds it L too), the decoder turns its pooled features into Q logits per
  pixel, and the loss is the cross-entropy against Zhang et al.'s soft encoding of the true
  ab (5 nearest of the Q in-gamut bins of the 10-unit grid, Gaussian sigma 5), each pixel
  weighted by the class-rebalancing weight of its bin: w ~ ((1 - lambda) p~ + lambda / Q)^-1
  with p~ the smoothed empirical ab distribution. p~ is estimated before step 0 from the
  pixels of `prior_batches` training batches and kept in method_state['ab_counts'], so it
  is saved with every checkpoint and a resumed run uses the same weights.

  The preview shows the L input and the colourisation decoded by the annealed mean
  (T = `temperature`). Differences from the paper: the prediction passes through the pooled
  feature vector (the evaluated representation) and a convolutional decoder, rather than a
  fully convolutional network's 1/4-resolution map; Q is the bin count our gamut test gives
  (see sslax.augment.color.ab_bin_centres).
  """

  name = "colorization"
  heads = ("decoder",)
  num_views = 1
  config_fields = {
      "rebalance_mix": Field(0.5, "lambda, the uniform part of the rebalancing prior (1: no rebalancing)", ge=0, le=1),
      "prior_batches": Field(100, "training batches whose pixels estimate the ab prior before step 0", gt=0,
                             integer=True),
      "temperature": Field(0.38, "annealed-mean temperature of the preview's colourisations", gt=0),
  }

  @classmethod
  def validate_config(cls, config) -> None:
    super().validate_config(config)
    if config.model.input != "lightness":
      raise ConfigError(f"colorization predicts colour from lightness: set config.model.input='lightness' "
                        f"(got {config.model.input!r}).")
    check_dense_decoder(config, cls.name, len(color.ab_bin_centres()))

  def init_state(self, params, rng):
    del params, rng
    return {"ab_counts": jnp.zeros((len(color.ab_bin_centres()),), jnp.float32)}

  def before_training(self, state, forward_pass):
    centres = jnp.asarray(color.ab_bin_centres())

    def count(model, params, batch_stats, method_state, views, *, index, axis_name):
      del model, params, batch_stats, index
      bins = color.nearest_bin(lab_of_views(views[0], self.config)[..., 1:], centres)
      counts = jnp.zeros_like(method_state["ab_counts"]).at[bins.reshape(-1)].add(1.0)
      return dict(method_state, ab_counts=method_state["ab_counts"] + parallel.global_sum(counts, axis_name))

    return forward_pass(count, max_batches=self.settings.prior_batches)

  def loss(self, model, params, batch_stats, method_state, views, *, step, axis_name, batch=None):
    del step, batch
    centres = jnp.asarray(color.ab_bin_centres())
    ab = lab_of_views(views[0], self.config)[..., 1:]
    targets = color.soft_encode(ab, centres)
    weights = color.rebalancing_weights(method_state["ab_counts"], centres, self.settings.rebalance_mix)
    pixel_weights = weights[jnp.argmax(targets, axis=-1)]
    out, updates = model.apply({"params": params, "batch_stats": batch_stats}, views[0], train=True, pretext=True,
                               mutable=["batch_stats"])
    loss = parallel.global_mean(pixel_cross_entropy(out["reconstruction"], targets, pixel_weights), axis_name)
    hit = jnp.argmax(out["reconstruction"], axis=-1) == jnp.argmax(targets, axis=-1)
    return LossOutput(loss=loss, batch_stats=updates.get("batch_stats", batch_stats), method_state=method_state,
                      features=out["features"], embeddings=out["features"],
                      metrics={"ab_bin_top1": parallel.global_mean(hit.mean(axis=(1, 2)), axis_name)})

  def preview(self, model, variables, images, keys):
    del keys
    lightness = lab_of_views(images, self.config)[..., :1]
    logits = model.apply(variables, images, train=False, pretext=True)["reconstruction"]
    return [grey(lightness, self.config), colourised(lightness, logits, self.config, self.settings.temperature)]
