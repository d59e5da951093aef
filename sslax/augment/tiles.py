"""Tile-based pretext transforms: a 3x3 grid of jittered tiles (jigsaw, relative patch
location), the jigsaw permutation set, and the chromatic-aberration defences.

Everything here is a pure JAX function of explicit per-example keys, so the tiles of an
example depend only on (seed, step, global index), never on the device count.
"""
from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np

GRID = 3  # Tiles per side.
NUM_TILES = GRID * GRID
CENTRE = NUM_TILES // 2
# Relative patch location: label k is the k-th neighbour of the centre cell, row-major
# (0 = top-left, 1 = top, 2 = top-right, 3 = left, 4 = right, 5 = bottom-left, ...).
NEIGHBOURS = tuple(i for i in range(NUM_TILES) if i != CENTRE)


def cell_size(image_size: int) -> int:
  """Side of one grid cell: the image's side split in three (a remainder is left unused)."""
  return image_size // GRID


def check_tile_geometry(image_size: int, tile_size: int, field_prefix: str) -> None:
  """Raises ValueError if `tile_size` tiles do not fit the cells of an `image_size` view."""
  cell = cell_size(image_size)
  if not 1 <= tile_size <= cell:
    raise ValueError(f"{field_prefix}.tile_size={tile_size} must be in [1, {cell}]: a {image_size}x{image_size} "
                     f"view (config.augment.crop_size) has 3x3 cells of {cell} pixels; a tile smaller than its "
                     "cell leaves a random gap between tiles.")


def grid_tiles(image: jax.Array, key: jax.Array, tile_size: int, channel_jitter: int = 0) -> jax.Array:
  """The 9 tiles of one image: each a random tile_size square inside its cell of a 3x3 grid.

  The offset inside the cell is uniform, so neighbouring tiles are separated by a random gap
  (of cell - tile_size pixels on average) and never share pixels: a gap and jitter keep the
  network from matching tiles by continuing edges and textures (Doersch et al. 2015,
  Noroozi & Favaro 2016). With `channel_jitter` J > 0 each colour channel is cut at its own
  offset of up to +-J pixels (clipped to the image), which removes chromatic aberration as a
  cue to the tile's position (Noroozi & Favaro 2016, section 3.2).

  Args:
    image: (S, S, C) image.
    key: this example's PRNG key.
    tile_size: side of a tile, at most S // 3.
    channel_jitter: maximal per-channel shift in pixels.

  Returns:
    (9, tile_size, tile_size, C) tiles in row-major grid order.
  """
  size, channels = image.shape[0], image.shape[-1]
  cell = cell_size(size)
  k_pos, k_chan = jax.random.split(key)
  offsets = jax.random.randint(k_pos, (NUM_TILES, 2), 0, cell - tile_size + 1)
  origin = jnp.stack(jnp.divmod(jnp.arange(NUM_TILES), GRID), axis=-1) * cell + offsets  # (9, 2) top, left
  shifts = jax.random.randint(k_chan, (NUM_TILES, channels, 2), -channel_jitter, channel_jitter + 1)
  corners = jnp.clip(origin[:, None, :] + shifts, 0, size - tile_size)  # (9, C, 2)

  def cut(corner, channel):
    return jax.lax.dynamic_slice(image[..., channel], (corner[0], corner[1]), (tile_size, tile_size))

  tiles = jax.vmap(jax.vmap(cut, in_axes=(0, 0)), in_axes=(0, None))(corners, jnp.arange(channels))  # (9, C, t, t)
  return jnp.moveaxis(tiles, 1, -1)


def normalize_tiles(tiles: jax.Array, eps: float = 1e-5) -> jax.Array:
  """Each tile to zero mean and unit standard deviation over its pixels and channels.

  Noroozi & Favaro normalise every tile on its own so that the network cannot order tiles by
  their low-level statistics (brightness and contrast that vary smoothly across the image).

  Args:
    tiles: (..., t, t, C).

  Returns:
    Same shape, float32.
  """
  tiles = tiles.astype(jnp.float32)
  mean = tiles.mean(axis=(-3, -2, -1), keepdims=True)
  std = tiles.std(axis=(-3, -2, -1), keepdims=True)
  return (tiles - mean) / (std + eps)


def drop_colours(tile: jax.Array, key: jax.Array, noise_scale: float = 0.01) -> jax.Array:
  """Keeps one random colour channel and replaces the other two by faint Gaussian noise.

  Doersch et al. (2015, section 4.1) found that the network located patches from chromatic
  aberration (colour fringes that grow towards the image border) and removed the cue by
  "colour dropping": 2 of the 3 channels are replaced by noise with 1/100 of the kept
  channel's standard deviation.

  Args:
    tile: (t, t, C) normalised tile (channels of about zero mean, so is the noise).
    key: PRNG key.
    noise_scale: noise std relative to the kept channel's std.

  Returns:
    (t, t, C) tile.
  """
  k_keep, k_noise = jax.random.split(key)
  tile = tile.astype(jnp.float32)
  keep = jax.random.randint(k_keep, (), 0, tile.shape[-1])
  kept = tile[..., keep]
  noise = jax.random.normal(k_noise, tile.shape, jnp.float32) * noise_scale * kept.std()
  return jnp.where(jnp.arange(tile.shape[-1]) == keep, tile, noise)


def all_permutations(n: int = NUM_TILES) -> np.ndarray:
  """Every permutation of range(n) in lexicographic order, (n!, n) int8."""
  return np.array(list(itertools.permutations(range(n))), dtype=np.int8)


@functools.lru_cache(maxsize=8)  # Building a large set takes seconds; state init asks twice.
def hamming_permutation_set(size: int, seed: int = 0, n: int = NUM_TILES) -> np.ndarray:
  """A set of `size` permutations of range(n) with large pairwise Hamming distances.

  Noroozi & Favaro (2016, algorithm 1) choose the jigsaw's permutations greedily so that they
  are far apart: the harder two permutations are to confuse, the more the network must
  understand the tiles. This greedy rule is the max-min one (farthest-point sampling): start
  from a random permutation, then repeatedly add the permutation whose smallest Hamming
  distance to the chosen ones is largest (ties: the lexicographically first). It is
  deterministic given `seed`, so every process builds the same set.

  Args:
    size: number of permutations, 2 to n!.
    seed: picks the first permutation.
    n: elements permuted (9 tiles).

  Returns:
    (size, n) int32 permutations (read-only); row i is the tile order of class i.
  """
  perms = all_permutations(n)
  if not 2 <= size <= len(perms):
    raise ValueError(f"A permutation set needs 2 to {len(perms)} permutations; got {size}.")
  chosen = [int(np.random.default_rng(seed).integers(len(perms)))]
  min_dist = (perms != perms[chosen[0]]).sum(axis=1)
  for _ in range(size - 1):
    nxt = int(np.argmax(min_dist))
    chosen.append(nxt)
    np.minimum(min_dist, (perms != perms[nxt]).sum(axis=1), out=min_dist)
  out = perms[chosen].astype(np.int32)
  out.flags.writeable = False  # Shared by the cache.
  return out


def min_hamming_distance(perms: np.ndarray) -> int:
  """Smallest Hamming distance between two different rows of `perms`."""
  dist = (perms[:, None, :] != perms[None, :, :]).sum(-1)
  np.fill_diagonal(dist, perms.shape[1] + 1)
  return int(dist.min())
