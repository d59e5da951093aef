"""Context encoders (Pathak, Krahenbuhl, Donahue, Darrell & Efros 2016): inpaint masked regions
with a reconstruction and an adversarial loss."""
from __future__ import annotations

import math
import zlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from sslax import parallel
from sslax.config_utils import Field
from sslax.methods.base import LossOutput, Method
from sslax.methods.common import check_decoder_fits_crop, method_keys

MASKS = ("central", "random_block", "random_region")
NUM_BLOCKS = 4  # random_block: squares of 1/4 of the masked area each (they may overlap).


def make_masks(keys: jax.Array, size: int, kind: str, fraction: float) -> jax.Array:
  """Per-example inpainting masks, 1 where the image is hidden.

  Args:
    keys: (n, 2) per-example keys.
    size: S, the square views' side.
    kind: 'central' (the centre square of area `fraction`), 'random_block' (NUM_BLOCKS
      squares of area fraction / NUM_BLOCKS each at random places, so at most `fraction`)
      or 'random_region' (the top `fraction` of a smooth random field: blobs of random
      shape covering `fraction` of the image, standing in for the paper's object-shaped
      masks).
    fraction: the area the mask covers (at most, for random_block).

  Returns:
    (n, S, S, 1) float32 masks.
  """
  n = keys.shape[0]
  if kind == "central":
    side = max(1, round(size * math.sqrt(fraction)))
    lo = (size - side) // 2
    inside = (jnp.arange(size) >= lo) & (jnp.arange(size) < lo + side)
    return jnp.broadcast_to((inside[:, None] & inside[None, :])[None, :, :, None], (n, size, size, 1)).astype(
        jnp.float32)
  if kind == "random_block":
    side = max(1, round(size * math.sqrt(fraction / NUM_BLOCKS)))
    corners = jax.vmap(lambda k: jax.random.randint(k, (NUM_BLOCKS, 2), 0, size - side + 1))(keys)
    r = jnp.arange(size)
    rows = (r >= corners[..., :1]) & (r < corners[..., :1] + side)  # (n, blocks, S)
    cols = (r >= corners[..., 1:]) & (r < corners[..., 1:] + side)
    return jnp.any(rows[:, :, :, None] & cols[:, :, None, :], axis=1)[..., None].astype(jnp.float32)
  if kind == "random_region":
    coarse = jax.vmap(lambda k: jax.random.uniform(k, (4, 4)))(keys)
    field = jax.image.resize(coarse, (n, size, size), "cubic")
    threshold = jnp.quantile(field.reshape(n, -1), 1.0 - fraction, axis=1)
    return (field > threshold[:, None, None])[..., None].astype(jnp.float32)
  raise ValueError(f"Unknown mask {kind!r}; valid choices: {', '.join(MASKS)}.")


class Discriminator(nn.Module):
  """DCGAN-style critic of whole images: three 4x4 stride-2 convolutions with leaky ReLUs
  (width, 2 width, 4 width) and a linear logit. No BatchNorm, so the discriminator has no
  running statistics and its update is a pure function of its parameters and the batch."""

  width: int = 64

  @nn.compact
  def __call__(self, x):
    x = x.astype(jnp.float32)
    for i in range(3):
      x = nn.leaky_relu(nn.Conv(self.width * 2**i, (4, 4), strides=(2, 2), padding="SAME")(x), 0.2)
    return nn.Dense(1)(x.reshape(x.shape[0], -1))[:, 0]


def bce_with_logits(logits: jax.Array, target: float) -> jax.Array:
  """Per-row binary cross-entropy of logits against a constant label (1: real, 0: generated)."""
  return optax.sigmoid_binary_cross_entropy(logits, jnp.full_like(logits, target))


class ContextEncoder(Method):
  """Inpainting: reconstruct a masked region from its context, L2 plus an adversarial loss.

  One augmented view per image (crop and flip) has a region hidden (set to the mean colour):
  the centre square, random blocks or a random region (`mask`). The backbone encodes the
  masked view to its pooled features and the decoder reconstructs the view; the
  reconstruction loss is the squared error over the hidden pixels only. The composite
  (the visible pixels, and the reconstruction in the hole) is judged by a discriminator
  with its own parameters and Adam optimizer (beta1 0.5, as DCGAN and the paper), kept in
  method_state, so they are checkpointed with everything else.

  Each step, in the order of the paper's (DCGAN) implementation:
    1. the discriminator takes one step on real views against stop_gradient(composite):
       its loss never reaches the encoder-decoder;
    2. the encoder-decoder's loss is w_rec * L2 + w_adv * (-log D(composite)) with the
       updated discriminator's parameters held constant: its loss never updates the
       discriminator (the trainer's optimizer only sees TrainState.params).
  The paper's weights are 0.999 and 0.001. Differences: the decoder reconstructs the whole
  view (the paper's central variant outputs only the centre) and the loss counts the hidden
  pixels without the paper's overlap band.
  """

  name = "context_encoder"
  heads = ("decoder",)
  num_views = 1
  config_fields = {
      # The paper's feature-learning experiments use random regions (section 3.3): features
      # trained on a central hole latch onto its boundary and transfer worse to whole images.
      "mask": Field("random_region", "the hidden region", choices=MASKS),
      "mask_fraction": Field(0.25, "area hidden (at most, for random_block)", gt=0, lt=1),
      "reconstruction_weight": Field(0.999, "weight of the L2 loss", ge=0),
      "adversarial_weight": Field(0.001, "weight of the adversarial loss", ge=0),
      "discriminator_learning_rate": Field(2e-4, "Adam learning rate of the discriminator", ge=0),
      "discriminator_width": Field(64, "channels of the discriminator's first convolution", gt=0, integer=True),
  }

  @classmethod
  def validate_config(cls, config) -> None:
    super().validate_config(config)
    check_decoder_fits_crop(config)

  def __init__(self, config, **kwargs):
    super().__init__(config, **kwargs)
    self.discriminator = Discriminator(self.settings.discriminator_width)
    self.discriminator_tx = optax.adam(self.settings.discriminator_learning_rate, b1=0.5, b2=0.999)

  def init_state(self, params, rng):
    del params
    size = self.config.augment.crop_size
    d_params = self.discriminator.init(rng, jnp.zeros((1, size, size, 3)))["params"]
    return {"discriminator": d_params, "discriminator_opt_state": self.discriminator_tx.init(d_params)}

  def masks(self, keys, size):
    return make_masks(keys, size, self.settings.mask, self.settings.mask_fraction)

  def inpaint(self, model, variables, x, masks, train):
    """(composite, reconstruction, batch-stat updates) of views `x` with `masks` hidden."""
    kwargs = {"mutable": ["batch_stats"]} if train else {}
    result = model.apply(variables, (x * (1.0 - masks)).astype(x.dtype), train=train, pretext=True, **kwargs)
    out, updates = result if train else (result, {})
    reconstruction = out["reconstruction"]
    return x.astype(jnp.float32) * (1.0 - masks) + reconstruction * masks, out, updates

  def discriminator_step(self, d_params, d_opt_state, real, fake, axis_name):
    """One Adam step of the discriminator on real vs. generated images (global-batch mean loss).

    Returns:
      (new params, new optimizer state, loss, accuracy on real and fake).
    """
    def loss_fn(p):
      real_logits = self.discriminator.apply({"params": p}, real)
      fake_logits = self.discriminator.apply({"params": p}, fake)
      loss = parallel.global_mean(bce_with_logits(real_logits, 1.0) + bce_with_logits(fake_logits, 0.0), axis_name)
      correct = jnp.concatenate([real_logits > 0, fake_logits < 0]).astype(jnp.float32)
      return loss, parallel.global_mean(correct, axis_name)

    (loss, accuracy), grads = jax.value_and_grad(loss_fn, has_aux=True)(d_params)
    updates, d_opt_state = self.discriminator_tx.update(grads, d_opt_state, d_params)
    return optax.apply_updates(d_params, updates), d_opt_state, loss, accuracy

  def loss(self, model, params, batch_stats, method_state, views, *, step, axis_name, batch=None):
    del batch
    x = views[0]
    n = x.shape[0]
    masks = self.masks(method_keys(self.config, step, n, axis_name, stream=zlib.crc32(self.name.encode())),
                       x.shape[1])
    composite, out, updates = self.inpaint(model, {"params": params, "batch_stats": batch_stats}, x, masks, True)
    hidden = jnp.maximum(masks.sum(axis=(1, 2, 3)) * x.shape[-1], 1.0)
    squared = jnp.sum(masks * jnp.square(out["reconstruction"] - x.astype(jnp.float32)), axis=(1, 2, 3)) / hidden
    reconstruction = parallel.global_mean(squared, axis_name)
    real = x.astype(jnp.float32)
    d_params, d_opt_state, d_loss, d_accuracy = self.discriminator_step(
        method_state["discriminator"], method_state["discriminator_opt_state"], real,
        jax.lax.stop_gradient(composite), axis_name)
    frozen = jax.lax.stop_gradient(d_params)
    adversarial = parallel.global_mean(bce_with_logits(self.discriminator.apply({"params": frozen}, composite), 1.0),
                                       axis_name)
    loss = self.settings.reconstruction_weight * reconstruction + self.settings.adversarial_weight * adversarial
    return LossOutput(loss=loss, batch_stats=updates.get("batch_stats", batch_stats),
                      method_state=dict(method_state, discriminator=d_params, discriminator_opt_state=d_opt_state),
                      features=out["features"], embeddings=out["features"],
                      metrics={"reconstruction_mse": reconstruction, "adversarial_loss": adversarial,
                               "discriminator_loss": d_loss, "discriminator_accuracy": d_accuracy})

  def preview(self, model, variables, images, keys):
    masks = self.masks(keys, images.shape[1])
    composite, _, _ = self.inpaint(model, variables, images, masks, False)
    return [images * (1.0 - masks), composite]
