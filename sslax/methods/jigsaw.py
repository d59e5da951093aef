"""Jigsaw puzzles (Noroozi & Favaro 2016): which permutation shuffled the 9 tiles of an image."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from sslax.augment.tiles import NUM_TILES, hamming_permutation_set, normalize_tiles
from sslax.config_utils import Field
from sslax.methods.common import TileClassificationMethod


class Jigsaw(TileClassificationMethod):
  """Classify which of a fixed set of permutations ordered an image's 3x3 tiles.

  The permutation set (`num_permutations`, 100 by default as in the paper's best
  setting, up to 1000) is chosen greedily for large Hamming distances from `config.seed`
  (sslax.augment.tiles.hamming_permutation_set) and kept in the method state, so it is
  saved in every checkpoint and a resumed run uses exactly the set it started with.
  Input slot i of an image shows tile `perm[i]` of its grid; the label is the index of
  `perm` in the set. Against shortcuts, as in the paper: a random gap between tiles and
  jitter inside each cell, every tile normalised on its own, and (with channel_jitter) each
  colour channel cut at its own small offset; grayscale and colour jitter come from
  config.augment as for any view.
  """

  name = "jigsaw"
  classifier_group = NUM_TILES
  config_fields = {
      "num_permutations": Field(100, "size of the permutation set (the classifier's classes)", ge=2, le=1000,
                                integer=True),
      "tile_size": Field(9, "side of a tile in pixels, at most config.augment.crop_size // 3", ge=1, integer=True),
      "channel_jitter": Field(1, "largest per-colour-channel shift of a tile in pixels", ge=0, integer=True),
  }

  @classmethod
  def num_classes(cls, config) -> int:
    return config.jigsaw.num_permutations

  def init_state(self, params, rng) -> dict:
    del params, rng
    return {"permutations": jnp.asarray(hamming_permutation_set(self.settings.num_permutations, seed=self.config.seed))}

  def make_inputs(self, tiles, keys, method_state):
    perms = method_state["permutations"]
    labels = jax.vmap(lambda k: jax.random.randint(k, (), 0, perms.shape[0]))(keys)
    order = perms[labels]  # (n, 9): slot i shows tile order[i].
    shuffled = jnp.take_along_axis(tiles, order[:, :, None, None, None], axis=1)
    return normalize_tiles(shuffled), labels
