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

  With `neighbours_per_image` r > 1 each image gives r distinct neighbours (a random subset,
  in random order), each classified in a pair with the image's one encoding of the centre
  patch: r + 1 tiles through the encoder for r labels, where the paper's single pair costs
  two tiles per label (not in the paper, whose batches hold one pair per image).
  """

  name = "relative_patch"
  classifier_group = 2
  config_fields = {
      "tile_size": Field(9, "side of a patch in pixels, at most config.augment.crop_size // 3", ge=1, integer=True),
      "channel_jitter": Field(0, "largest per-colour-channel shift of a patch in pixels", ge=0, integer=True),
      "colour_drop_prob": Field(1.0, "probability of colour dropping each patch", ge=0, le=1),
      "patch_colour_jitter_prob": Field(0.0, "probability of an independent colour jitter on each patch", ge=0,
                                        le=1),
      "neighbours_per_image": Field(1, "neighbours classified per image, each against the shared centre "
                                    "patch (1 in the paper)", ge=1, le=8, integer=True),
  }

  @classmethod
  def num_classes(cls, config) -> int:
    return len(NEIGHBOURS)

  def make_inputs(self, tiles, keys, method_state):
    """Per image: the centre patch, then r neighbours; labels (n,) for r = 1, else (n, r)."""
    del method_state
    neighbours = jnp.asarray(NEIGHBOURS)
    r = self.settings.neighbours_per_image

    def one(tiles, key):
      k_label, k_drop, k_colour = jax.random.split(key, 3)
      if r == 1:
        label = jax.random.randint(k_label, (), 0, len(NEIGHBOURS))
      else:
        label = jax.random.permutation(k_label, len(NEIGHBOURS))[:r]
      group = jnp.concatenate([tiles[CENTRE][None], tiles[neighbours[label].reshape(r)]]).astype(jnp.float32)
      if self.settings.patch_colour_jitter_prob > 0:
        # Its own key stream, so the label and colour dropping keep theirs.
        group = jax.vmap(self._jitter)(group, jax.random.split(jax.random.fold_in(key, 3), r + 1))
      drop = jax.random.bernoulli(k_drop, self.settings.colour_drop_prob, (r + 1,))
      dropped = jax.vmap(drop_colours)(group, jax.random.split(k_colour, r + 1))
      return jnp.where(drop[:, None, None, None], dropped, group), label

    return jax.vmap(one)(tiles, keys)

  def classifier_rows(self, n: int) -> jax.Array | None:
    """Rows (centre, neighbour j) of each image's r + 1 tiles; None for the paper's one pair."""
    r = self.settings.neighbours_per_image
    if r == 1:
      return None
    first = (r + 1) * jnp.arange(n)[:, None]  # (n, 1): each image's centre
    rows = jnp.stack([jnp.broadcast_to(first, (n, r)), first + jnp.arange(1, r + 1)], axis=-1)
    return rows.reshape(n * r, 2)

  def _jitter(self, patch: jax.Array, key: jax.Array) -> jax.Array:
    """With probability patch_colour_jitter_prob, config.augment's colour jitter of one normalised patch."""
    k_apply, k_jitter = jax.random.split(key)
    mean, std = jnp.asarray(self.config.data.mean), jnp.asarray(self.config.data.std)
    jittered = (color_jitter(jnp.clip(patch * std + mean, 0.0, 1.0), k_jitter, self.config.augment) - mean) / std
    return jnp.where(jax.random.uniform(k_apply) < self.settings.patch_colour_jitter_prob, jittered, patch)
