"""Relative patch location (Doersch, Gupta & Efros 2015): where is a patch relative to the centre one."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from sslax.augment.tiles import CENTRE, NEIGHBOURS, drop_colours
from sslax.augment.views import color_jitter
from sslax.config_utils import Field
from sslax.methods.common import TileClassificationMethod


class RelativePatch(TileClassificationMethod):
  """8-way classification of a neighbour's position from the pair (centre patch, neighbour).

  Each image's view is cut into a 3x3 grid of jittered tiles with gaps; the centre tile and
  one of its 8 neighbours (uniformly chosen; label k = `sslax.augment.tiles.NEIGHBOURS[k]`,
  row-major) go through the shared encoder, and the classifier reads their concatenated
  projections, centre first. Against the chromatic-aberration shortcut the paper found,
  each patch is colour-dropped with probability `colour_drop_prob` (one random channel kept,
  the other two replaced by faint noise; 1.0 in the paper). With `patch_colour_jitter_prob`
  > 0 each patch of a pair also gets its own colour jitter (config.augment's strengths,
  before any colour dropping), so that the two patches' colours no longer match where an
  object continues across the gap (not in the paper; a cue that colour dropping removes
  too, at the price of the network seeing one channel).
  """

  name = "relative_patch"
  classifier_group = 2
  config_fields = {
      "tile_size": Field(9, "side of a patch in pixels, at most config.augment.crop_size // 3", ge=1, integer=True),
      "channel_jitter": Field(0, "largest per-colour-channel shift of a patch in pixels", ge=0, integer=True),
      "colour_drop_prob": Field(1.0, "probability of colour dropping each patch", ge=0, le=1),
      "patch_colour_jitter_prob": Field(0.0, "probability of an independent colour jitter on each patch", ge=0,
                                        le=1),
  }

  @classmethod
  def num_classes(cls, config) -> int:
    return len(NEIGHBOURS)

  def make_inputs(self, tiles, keys, method_state):
    del method_state
    neighbours = jnp.asarray(NEIGHBOURS)

    def one(tiles, key):
      k_label, k_drop, k_colour = jax.random.split(key, 3)
      label = jax.random.randint(k_label, (), 0, len(NEIGHBOURS))
      pair = jnp.stack([tiles[CENTRE], tiles[neighbours[label]]]).astype(jnp.float32)
      if self.settings.patch_colour_jitter_prob > 0:
        # Its own key stream, so the label and colour dropping keep theirs.
        pair = jax.vmap(self._jitter)(pair, jax.random.split(jax.random.fold_in(key, 3), 2))
      drop = jax.random.bernoulli(k_drop, self.settings.colour_drop_prob, (2,))
      dropped = jax.vmap(drop_colours)(pair, jax.random.split(k_colour, 2))
      return jnp.where(drop[:, None, None, None], dropped, pair), label

    return jax.vmap(one)(tiles, keys)

  def _jitter(self, patch: jax.Array, key: jax.Array) -> jax.Array:
    """With probability patch_colour_jitter_prob, config.augment's colour jitter of one normalised patch."""
    k_apply, k_jitter = jax.random.split(key)
    mean, std = jnp.asarray(self.config.data.mean), jnp.asarray(self.config.data.std)
    jittered = (color_jitter(jnp.clip(patch * std + mean, 0.0, 1.0), k_jitter, self.config.augment) - mean) / std
    return jnp.where(jax.random.uniform(k_apply) < self.settings.patch_colour_jitter_prob, jittered, patch)
