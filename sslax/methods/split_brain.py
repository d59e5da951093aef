"""Split-brain autoencoder (Zhang, Isola & Efros 2017): two half networks predict each other's channels."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from sslax import parallel
from sslax.augment import color
from sslax.config_utils import ConfigError, Field
from sslax.methods.base import LossOutput, Method
from sslax.methods.colorization import check_dense_decoder, colourised, grey, lab_of_views, pixel_cross_entropy


def lightness_bins(lightness: jax.Array, num_bins: int) -> jax.Array:
  """(...,) int32 bin of L in [0, 100] among `num_bins` equal bins."""
  return jnp.clip(jnp.floor(lightness / (100.0 / num_bins)), 0, num_bins - 1).astype(jnp.int32)


class SplitBrain(Method):
  """Cross-channel prediction with classification losses: L -> ab and ab -> L.

  The backbone is two sub-networks (config.model.input='split_brain', each ResNet half as
  wide as configured): F_L sees the L channel of CIE Lab and F_ab the ab channels. A
  decoder on F_L's pooled features predicts each pixel's ab as a distribution over the Q
  in-gamut ab bins (soft-encoded targets, as colorization), and one on F_ab's predicts each
  pixel's L over `lightness_bins` equal bins; the loss is the sum of the two
  cross-entropies (the paper's classification losses). The representation is the
  concatenation [F_L, F_ab] of a full RGB image, which every evaluation protocol reads.

  The preview shows the L input, F_L's colourisation (annealed mean) and F_ab's lightness
  prediction combined with the true ab.
  """

  name = "split_brain"
  heads = ("decoder",)
  num_views = 1
  config_fields = {
      "lightness_bins": Field(50, "classes of the ab -> L prediction (equal bins of L in [0, 100])", ge=2,
                              integer=True),
      "temperature": Field(0.38, "annealed-mean temperature of the preview's colourisations", gt=0),
  }

  @classmethod
  def validate_config(cls, config) -> None:
    super().validate_config(config)
    if config.model.input != "split_brain":
      raise ConfigError(f"split_brain needs its two half networks: set config.model.input='split_brain' "
                        f"(got {config.model.input!r}).")
    check_dense_decoder(config, cls.name, (len(color.ab_bin_centres()), config.split_brain.lightness_bins))

  def _predictions(self, model, variables, images, train):
    kwargs = {"mutable": ["batch_stats"]} if train else {}
    result = model.apply(variables, images, train=train, pretext=True, **kwargs)
    out, updates = result if train else (result, {})
    q = len(color.ab_bin_centres())
    return out, out["reconstruction"][..., :q], out["reconstruction"][..., q:], updates

  def loss(self, model, params, batch_stats, method_state, views, *, step, axis_name, batch=None):
    del step, batch
    lab = lab_of_views(views[0], self.config)
    ab_targets = color.soft_encode(lab[..., 1:], jnp.asarray(color.ab_bin_centres()))
    l_targets = jax.nn.one_hot(lightness_bins(lab[..., 0], self.settings.lightness_bins), self.settings.lightness_bins)
    out, ab_logits, l_logits, updates = self._predictions(model, {"params": params, "batch_stats": batch_stats},
                                                          views[0], train=True)
    ab_loss = parallel.global_mean(pixel_cross_entropy(ab_logits, ab_targets), axis_name)
    l_loss = parallel.global_mean(pixel_cross_entropy(l_logits, l_targets), axis_name)
    return LossOutput(loss=ab_loss + l_loss, batch_stats=updates.get("batch_stats", batch_stats),
                      method_state=method_state, features=out["features"], embeddings=out["features"],
                      metrics={"ab_loss": ab_loss, "lightness_loss": l_loss})

  def preview(self, model, variables, images, keys):
    del keys
    lab = lab_of_views(images, self.config)
    _, ab_logits, l_logits, _ = self._predictions(model, variables, images, train=False)
    width = 100.0 / self.settings.lightness_bins
    predicted_l = jax.nn.softmax(l_logits, axis=-1) @ (width * (jnp.arange(self.settings.lightness_bins) + 0.5))
    rgb = color.lab_to_rgb(jnp.concatenate([predicted_l[..., None], lab[..., 1:]], axis=-1))
    from_ab = (rgb - jnp.asarray(self.config.data.mean)) / jnp.asarray(self.config.data.std)
    return [grey(lab[..., :1], self.config), colourised(lab[..., :1], ab_logits, self.config, self.settings.temperature),
            from_ab]
