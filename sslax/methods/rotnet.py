"""RotNet (Gidaris, Singh & Komodakis 2018): predict which of four rotations was applied."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from sslax.config_utils import ConfigError
from sslax.methods.base import LossOutput, Method
from sslax.methods.common import classification_loss, multi_view_forward

NUM_ROTATIONS = 4


def rotate_all(images: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Every image at 0, 90, 180 and 270 degrees (counter-clockwise), as one batch.

  Args:
    images: (n, S, S, C) square images.

  Returns:
    ((4n, S, S, C) images, rotation k first: [all at 0; all at 90; ...], (4n,) int32 labels k).
  """
  rotated = jnp.concatenate([jnp.rot90(images, k, axes=(1, 2)) for k in range(NUM_ROTATIONS)])
  labels = jnp.repeat(jnp.arange(NUM_ROTATIONS, dtype=jnp.int32), images.shape[0])
  return rotated, labels


class RotNet(Method):
  """4-way rotation classification of every image in all four rotations.

  One augmented view per image (random crop and flip, no colour changes, as in the paper)
  is rotated by 0/90/180/270 degrees; the four rotated copies go through the network as
  one batch, so BatchNorm sees all of them, as in the paper's implementation. The
  classifier is the projector head with 4 outputs (its logits); the representation is the
  backbone's pooled features, which the online probe, kNN and linear protocols read.
  """

  name = "rotnet"
  num_views = 1

  @classmethod
  def validate_config(cls, config) -> None:
    super().validate_config(config)
    if config.model.projector.output_dim != NUM_ROTATIONS:
      raise ConfigError(f"rotnet classifies {NUM_ROTATIONS} rotations: set config.model.projector.output_dim="
                        f"{NUM_ROTATIONS} (got {config.model.projector.output_dim}).")
    if config.augment.crop_size <= 0:
      raise ConfigError("rotnet needs square crops: set config.augment.crop_size > 0.")

  def loss(self, model, params, batch_stats, method_state, views, *, step, axis_name, batch=None):
    del step, batch
    rotated, labels = rotate_all(views[0])
    (out,), new_stats = multi_view_forward(model, params, batch_stats, [rotated], predict=False)
    loss, top1 = classification_loss(out["projection"], labels, axis_name)
    n = views[0].shape[0]
    features = out["features"][:n]  # The unrotated images: what the probe and monitors see.
    return LossOutput(loss=loss, batch_stats=new_stats, method_state=method_state, features=features,
                      embeddings=features, metrics={"rotation_top1": top1})
