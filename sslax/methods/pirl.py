"""PIRL (Misra & van der Maaten 2020, "Self-Supervised Learning of Pretext-Invariant
Representations"): an image and its jigsaw-shuffled tiles both match the image's memory-bank row."""
from __future__ import annotations

import zlib

import jax
import jax.numpy as jnp

from sslax import losses
from sslax.augment.tiles import NUM_TILES, grid_tiles, normalize_tiles
from sslax.config_utils import ConfigError, Field
from sslax.methods.common import check_tile_config, method_keys, multi_view_forward
from sslax.methods.base import LossOutput
from sslax.methods.memory_bank import MEMORY_BANK_FIELDS, MemoryBankMethod


class PIRL(MemoryBankMethod):
  """Two views per image: view 1 whole (f(v_I): backbone, then the projector), view 2 cut into
  a 3x3 grid of jittered tiles with gaps (the jigsaw transform of sslax.augment.tiles, each
  tile normalised on its own) in a random order (a uniform random permutation per example,
  from (seed, step, index)). Every tile goes through the backbone and the projector, and the
  classifier head (a linear layer in the paper) maps the 9 concatenated tile projections to
  g(v_It), in the projector's space.

  Loss (the paper's eq. 5): lambda * NCE(m_I, g(v_It)) + (1 - lambda) * NCE(m_I, f(v_I)),
  lambda = `loss_weight` (0.5), both against the image's memory row m_I with negatives from
  the bank (MemoryBankMethod: NCE with Z estimated once, shared negatives); the bank stores
  f(v_I) with momentum 0.5. Paper: ResNet-50, 32,000 negatives, temperature 0.07.
  Difference: the per-tile projection is the shared projector rather than a separate layer.
  """

  name = "pirl"
  num_views = 2
  heads = ("projector", "classifier")
  classifier_group = NUM_TILES
  config_fields = dict(
      MEMORY_BANK_FIELDS,
      loss_weight=Field(0.5, "lambda: weight of the jigsaw term (1 - lambda: the image term)", ge=0, le=1),
      tile_size=Field(9, "side of a jigsaw tile in pixels, at most config.augment.crop_size // 3", ge=1,
                      integer=True),
      channel_jitter=Field(0, "largest per-colour-channel shift of a tile in pixels", ge=0, integer=True),
  )

  @classmethod
  def validate_config(cls, config) -> None:
    super().validate_config(config)
    dim = config.model.projector.output_dim
    if config.model.classifier.output_dim != dim:
      raise ConfigError(f"pirl's jigsaw head maps the tiles into the memory bank's space: set "
                        f"config.model.classifier.output_dim={dim} (config.model.projector.output_dim; got "
                        f"{config.model.classifier.output_dim}).")
    check_tile_config(config, "pirl")

  def jigsaw_tiles(self, images: jax.Array, step: jax.Array, axis_name) -> jax.Array:
    """(n * 9, t, t, C) tiles of each image in a random order, each normalised on its own."""
    keys = method_keys(self.config, step, images.shape[0], axis_name, stream=zlib.crc32(b"pirl"))
    tile_keys, perm_keys = jnp.moveaxis(jax.vmap(jax.random.split)(keys), 1, 0)
    tiles = jax.vmap(grid_tiles, in_axes=(0, 0, None, None))(images, tile_keys, self.settings.tile_size,
                                                             self.settings.channel_jitter)
    order = jax.vmap(lambda k: jax.random.permutation(k, NUM_TILES))(perm_keys)
    shuffled = normalize_tiles(jnp.take_along_axis(tiles, order[:, :, None, None, None], axis=1))
    return shuffled.reshape(-1, *shuffled.shape[2:]).astype(images.dtype)

  def loss(self, model, params, batch_stats, method_state, views, *, step, axis_name, batch=None):
    outputs, batch_stats = multi_view_forward(model, params, batch_stats, views[:1])
    tiles = self.jigsaw_tiles(views[1], step, axis_name)
    out, updates = model.apply({"params": params, "batch_stats": batch_stats}, tiles, train=True, predict=False,
                               pretext=True, mutable=["batch_stats"])
    batch_stats = updates.get("batch_stats", batch_stats)
    image = losses.l2_normalize(outputs[0]["projection"].astype(jnp.float32))
    jigsaw = losses.l2_normalize(out["logits"].astype(jnp.float32))
    negatives = self.negative_indices(step)
    index = batch["index"]
    # Z is estimated from the image term on the first step and shared by both terms.
    image_loss, log_z, metrics = self.nce(image, index, method_state, negatives, axis_name)
    jigsaw_loss, _, jigsaw_metrics = self.nce(jigsaw, index, method_state, negatives, axis_name, log_normalizer=log_z)
    weight = float(self.settings.loss_weight)
    loss = weight * jigsaw_loss + (1.0 - weight) * image_loss
    new_state = self.update_bank(method_state, image, index, log_z, axis_name)
    metrics = {"bank_top1": metrics["bank_top1"], "jigsaw_bank_top1": jigsaw_metrics["bank_top1"],
               "image_nce": image_loss, "jigsaw_nce": jigsaw_loss, "log_normalizer": log_z}
    return LossOutput(loss=loss, batch_stats=batch_stats, method_state=new_state, features=outputs[0]["features"],
                      embeddings=jnp.concatenate([image, jigsaw]), metrics=metrics)
