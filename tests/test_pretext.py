"""Pretext tasks: their data transforms against independent references (the contract test
in test_method_contract.py covers their train steps like every other method's)."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from reference import load_config, requires_cifar

from sslax.augment import tiles
from sslax.config_utils import ConfigError
from sslax.methods import METHODS
from sslax.methods.rotnet import rotate_all
from sslax.presets import CIFAR_MEAN, CIFAR_STD


def test_rotations_and_labels_match_the_pixel_geometry():
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, size=(3, 5, 5, 2)).astype(np.float32)
  rotated, labels = rotate_all(jnp.asarray(images))
  rotated, labels = np.asarray(rotated), np.asarray(labels)
  np.testing.assert_array_equal(labels, np.repeat(np.arange(4), 3))
  s = images.shape[1]
  for k in range(4):
    for n in range(3):
      out, src = rotated[3 * k + n], images[n]
      for i in range(s):
        for j in range(s):
          # Counter-clockwise by k quarter turns: the pixel at (i, j) came from here.
          ii, jj = i, j
          for _ in range(k):
            ii, jj = jj, s - 1 - ii
          np.testing.assert_array_equal(out[i, j], src[ii, jj])
  assert not np.array_equal(rotated[3], rotated[0])  # 90 degrees changes a random image.


def test_rotnet_config_checks_the_classifier_size():
  config, _ = load_config("rotnet", **{"model.projector.output_dim": 10})
  with pytest.raises(ConfigError, match="output_dim=4"):
    METHODS["rotnet"].validate_config(config)


def _coordinate_image(size):
  """(size, size, 3) float image whose pixel (i, j) holds (i, j, 1000 + i * size + j)."""
  i, j = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
  return np.stack([i, j, 1000 + i * size + j], axis=-1).astype(np.float32)


def test_grid_tiles_lie_in_their_cells_with_a_random_gap():
  size, tile = 32, 8
  cell = 32 // 3
  out = np.asarray(jax.vmap(tiles.grid_tiles, in_axes=(None, 0, None))(
      jnp.asarray(_coordinate_image(size)), jax.random.split(jax.random.PRNGKey(0), 64), tile))
  assert out.shape == (64, 9, tile, tile, 3)
  offsets = set()
  for example in out:
    for k, t in enumerate(example):
      top, left = t[0, 0, 0], t[0, 0, 1]
      # A contiguous tile_size square: rows top.., columns left..
      np.testing.assert_array_equal(t[..., 0], top + np.arange(tile)[:, None] + 0 * np.arange(tile))
      np.testing.assert_array_equal(t[..., 1], left + np.arange(tile)[None, :] + 0 * np.arange(tile)[:, None])
      np.testing.assert_array_equal(t[..., 2], 1000 + t[..., 0] * size + t[..., 1])
      row, col = divmod(k, 3)
      assert row * cell <= top <= row * cell + cell - tile and col * cell <= left <= col * cell + cell - tile
      offsets.add((int(top - row * cell), int(left - col * cell)))
  assert offsets == {(a, b) for a in range(cell - tile + 1) for b in range(cell - tile + 1)}  # Every gap occurs.


def test_channel_jitter_shifts_each_channel_by_at_most_j_pixels():
  size, tile, jitter = 30, 8, 2
  image = _coordinate_image(size)
  image = np.stack([image[..., 2]] * 3, axis=-1)  # Every channel holds the pixel's position.
  out = np.asarray(jax.vmap(tiles.grid_tiles, in_axes=(None, 0, None, None))(
      jnp.asarray(image), jax.random.split(jax.random.PRNGKey(1), 32), tile, jitter))
  corner = out[:, :, 0, 0, :] - 1000  # (n, 9, C) positions i * size + j of each channel's corner.
  rows, cols = corner // size, corner % size
  shift_r = rows - np.median(rows, axis=-1, keepdims=True)
  assert np.abs(rows - rows[..., :1]).max() <= 2 * jitter and np.abs(cols - cols[..., :1]).max() <= 2 * jitter
  assert (np.abs(shift_r) > 0).any()  # Channels do get different offsets.


def test_normalize_tiles_gives_each_tile_zero_mean_unit_std():
  x = np.random.default_rng(0).normal(3.0, 2.0, size=(4, 9, 5, 5, 3)).astype(np.float32)
  y = np.asarray(tiles.normalize_tiles(jnp.asarray(x)))
  np.testing.assert_allclose(y.mean(axis=(-3, -2, -1)), 0, atol=1e-5)
  np.testing.assert_allclose(y.std(axis=(-3, -2, -1)), 1, atol=1e-3)


def test_drop_colours_keeps_one_channel_and_replaces_two_by_faint_noise():
  x = np.random.default_rng(0).normal(size=(16, 16, 3)).astype(np.float32)
  kept = []
  for s in range(20):
    y = np.asarray(tiles.drop_colours(jnp.asarray(x), jax.random.PRNGKey(s)))
    same = [c for c in range(3) if np.array_equal(y[..., c], x[..., c])]
    assert len(same) == 1
    kept.append(same[0])
    for c in set(range(3)) - set(same):
      assert 0.003 < y[..., c].std() / x[..., same[0]].std() < 0.03
  assert set(kept) == {0, 1, 2}


def _greedy_max_min_reference(size, first, n):
  """Farthest-point selection over all n! permutations, written independently (pure Python)."""
  perms = list(itertools.permutations(range(n)))
  chosen = [perms[first]]
  while len(chosen) < size:
    best, best_d = None, -1
    for p in perms:
      d = min(sum(a != b for a, b in zip(p, q)) for q in chosen)
      if d > best_d:
        best, best_d = p, d
    chosen.append(best)
  return np.array(chosen)


def test_permutation_set_is_the_greedy_max_min_hamming_set():
  perms = tiles.hamming_permutation_set(100, seed=0)
  assert perms.shape == (100, 9)
  assert all(sorted(p) == list(range(9)) for p in perms.tolist())
  assert len({tuple(p) for p in perms.tolist()}) == 100
  assert tiles.min_hamming_distance(perms) >= 6  # Random sets of 100 have pairs at distance 2.
  # The same rule over the 120 permutations of 5 elements, against a plain-Python greedy.
  first = int(np.random.default_rng(3).integers(120))
  np.testing.assert_array_equal(tiles.hamming_permutation_set(30, seed=3, n=5), _greedy_max_min_reference(30, first, 5))
  np.testing.assert_array_equal(tiles.hamming_permutation_set(100, seed=0), perms)  # Deterministic.
  assert not np.array_equal(tiles.hamming_permutation_set(100, seed=1), perms)


def test_jigsaw_slot_i_shows_tile_perm_i_and_the_set_is_in_the_state():
  config, _ = load_config("jigsaw", **{"jigsaw.num_permutations": 10, "model.classifier.output_dim": 10})
  method = METHODS["jigsaw"](config)
  state = method.init_state(None, None)
  np.testing.assert_array_equal(state["permutations"], tiles.hamming_permutation_set(10, seed=config.seed))
  x = np.random.default_rng(0).normal(size=(6, 9, 4, 4, 3)).astype(np.float32)
  inputs, labels = method.make_inputs(jnp.asarray(x), jax.random.split(jax.random.PRNGKey(0), 6), state)
  inputs, labels = np.asarray(inputs), np.asarray(labels)
  perms = np.asarray(state["permutations"])
  for n in range(6):
    for slot in range(9):
      t = x[n, perms[labels[n], slot]]
      np.testing.assert_allclose(inputs[n, slot], (t - t.mean()) / (t.std() + 1e-5), rtol=1e-5, atol=1e-5)
  labels_many = np.asarray(method.make_inputs(jnp.zeros((200, 9, 2, 2, 3)), jax.random.split(
      jax.random.PRNGKey(1), 200), state)[1])
  assert set(labels_many) == set(range(10))


def test_relative_patch_labels_match_the_neighbour_position():
  config, _ = load_config("relative_patch", **{"relative_patch.colour_drop_prob": 0.0,
                                               "relative_patch.neighbours_per_image": 1})  # the paper's pairs
  method = METHODS["relative_patch"](config)
  size, tile = 30, 8
  grid = jax.vmap(tiles.grid_tiles, in_axes=(None, 0, None))(jnp.asarray(_coordinate_image(size)),
                                                              jax.random.split(jax.random.PRNGKey(0), 200), tile)
  pairs, labels = method.make_inputs(grid, jax.random.split(jax.random.PRNGKey(1), 200), {})
  pairs, labels = np.asarray(pairs), np.asarray(labels)
  # Row-major neighbours of the centre: (d_row, d_col) of label k.
  expected = [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)]
  cell = size // 3
  for pair, label in zip(pairs, labels):
    centre, other = pair[0, 0, 0, :2] // cell, pair[1, 0, 0, :2] // cell
    assert tuple(centre) == (1, 1)
    assert tuple(other - centre) == expected[label]
  assert set(labels) == set(range(8))


@pytest.mark.parametrize("r", [3, 8])
def test_relative_patch_with_several_neighbours_shares_the_centre(r):
  config, _ = load_config("relative_patch", **{"relative_patch.colour_drop_prob": 0.0,
                                               "relative_patch.neighbours_per_image": r})
  method = METHODS["relative_patch"](config)
  size, tile, n = 30, 8, 100
  grid = jax.vmap(tiles.grid_tiles, in_axes=(None, 0, None))(jnp.asarray(_coordinate_image(size)),
                                                              jax.random.split(jax.random.PRNGKey(0), n), tile)
  groups, labels = method.make_inputs(grid, jax.random.split(jax.random.PRNGKey(1), n), {})
  groups, labels = np.asarray(groups), np.asarray(labels)
  assert groups.shape == (n, r + 1, tile, tile, 3) and labels.shape == (n, r)
  expected = [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)]
  cell = size // 3
  for group, label in zip(groups, labels):
    assert len(set(label)) == r  # distinct neighbours
    assert tuple(group[0, 0, 0, :2] // cell) == (1, 1)
    for j in range(r):
      assert tuple(group[1 + j, 0, 0, :2] // cell - 1) == expected[label[j]]
  assert set(labels.ravel()) == set(range(8))
  # Row i * r + j pairs image i's centre with its neighbour j.
  rows = np.asarray(method.classifier_rows(n))
  assert rows.shape == (n * r, 2)
  np.testing.assert_array_equal(rows[:, 0], np.repeat((r + 1) * np.arange(n), r))
  np.testing.assert_array_equal(rows[:, 1], ((r + 1) * np.arange(n)[:, None] + np.arange(1, r + 1)).ravel())


def test_classifier_rows_give_the_logits_of_the_explicit_pairs():
  """Shared centre encodings (classifier_rows) against each pair's two tiles fed as one group."""
  from sslax.models import build_model

  config, _ = load_config("relative_patch", **{"relative_patch.neighbours_per_image": 3})
  model = build_model(config.model, heads=("projector", "classifier"), classifier_group=2)
  x = jax.random.normal(jax.random.PRNGKey(0), (2 * 4, 4, 4, 3))  # 2 images, centre + 3 neighbours
  variables = model.init(jax.random.PRNGKey(1), x[:4], train=False, pretext=True)
  method = METHODS["relative_patch"](config)
  rows = method.classifier_rows(2)
  shared = model.apply(variables, x, train=False, pretext=True, classifier_rows=rows)["logits"]
  explicit = model.apply(variables, x[rows.reshape(-1)], train=False, pretext=True)["logits"]
  assert shared.shape == (6, 8)
  np.testing.assert_allclose(shared, explicit, rtol=1e-5, atol=1e-5)


def test_relative_patch_colour_jitter_is_per_patch_and_keeps_the_labels():
  size, tile, n = 30, 8, 64
  image = np.full((size, size, 3), 0.5, np.float32)  # one grey: every tile is the same
  grid = jax.vmap(tiles.grid_tiles, in_axes=(None, 0, None))(jnp.asarray(image), jax.random.split(
      jax.random.PRNGKey(0), n), tile)
  mean, std = np.array(CIFAR_MEAN), np.array(CIFAR_STD)  # the tiny preset's data.mean / data.std
  grid = (grid - mean) / std  # normalised, as the method receives its views
  keys = jax.random.split(jax.random.PRNGKey(1), n)

  def pairs(**overrides):
    config, _ = load_config("relative_patch", **{"relative_patch.colour_drop_prob": 0.0,
                                                 "relative_patch.neighbours_per_image": 1, **overrides})
    out = METHODS["relative_patch"](config).make_inputs(grid, keys, {})
    return np.asarray(out[0]), np.asarray(out[1])

  plain, labels = pairs()
  np.testing.assert_allclose(plain, np.broadcast_to(grid[:1, :2], plain.shape), rtol=1e-6, atol=1e-6)
  # Zero strength: the un-normalise, jitter, normalise round trip changes nothing.
  still, still_labels = pairs(**{"relative_patch.patch_colour_jitter_prob": 1.0, "augment.color_jitter_strength": 0.0})
  np.testing.assert_allclose(still, plain, rtol=1e-5, atol=1e-5)
  jittered, jittered_labels = pairs(**{"relative_patch.patch_colour_jitter_prob": 1.0})
  np.testing.assert_array_equal(jittered_labels, labels)
  np.testing.assert_array_equal(still_labels, labels)
  rgb = jittered * std + mean
  assert rgb.min() >= -1e-5 and rgb.max() <= 1 + 1e-5
  # Each patch has its own jitter: the grey centre and neighbour now differ in colour.
  centre, neighbour = rgb[:, 0].mean(axis=(1, 2)), rgb[:, 1].mean(axis=(1, 2))
  assert np.mean(np.abs(centre - neighbour).max(axis=-1) > 1e-3) > 0.9
  assert np.mean(np.abs(centre - 0.5).max(axis=-1) > 1e-3) > 0.9
  half, _ = pairs(**{"relative_patch.patch_colour_jitter_prob": 0.5})
  changed = np.abs(half - plain).max(axis=(2, 3, 4)) > 1e-4  # (n, 2)
  assert 0.3 < changed.mean() < 0.7


def test_tile_tasks_check_their_config():
  with pytest.raises(ConfigError, match="output_dim=100"):
    METHODS["jigsaw"].validate_config(load_config("jigsaw", **{"model.classifier.output_dim": 10})[0])
  with pytest.raises(ConfigError, match="tile_size"):
    METHODS["relative_patch"].validate_config(load_config("relative_patch", **{"relative_patch.tile_size": 6})[0])
  with pytest.raises(ConfigError, match="multiple of config.model.patch_size"):
    METHODS["jigsaw"].validate_config(load_config("jigsaw", **{"model.backbone": "vit_test", "jigsaw.tile_size": 3})[0])
  with pytest.raises(ConfigError, match="num_permutations"):
    METHODS["jigsaw"].validate_config(load_config("jigsaw", **{"jigsaw.num_permutations": 5000})[0])


def test_tile_methods_are_evaluated_on_the_mean_of_grid_tiles_of_their_training_scale():
  from sslax.evaluate.features import grid_average, grid_tile_size

  jigsaw, _ = load_config("jigsaw", "cpu")  # 9-pixel tiles of 32-pixel views.
  assert grid_tile_size(jigsaw, 32) == 9
  assert grid_tile_size(jigsaw, 64) == 18
  assert grid_tile_size(jigsaw, 96) == 27
  assert grid_tile_size(jigsaw, 32, "image") == 0
  simclr, _ = load_config("simclr", "cpu")
  assert grid_tile_size(simclr, 32) == 0
  assert grid_tile_size(simclr, 32, "grid") == 10  # whole cells
  with pytest.raises(ValueError, match="representation"):
    grid_tile_size(simclr, 32, "patches")
  # Per-tile features (here: each tile's pixel mean per channel, and its top-left pixel)
  # averaged over the 9 tiles equal a direct numpy computation on the centre squares.
  x = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype(np.float32)
  feats = grid_average(lambda t: jnp.concatenate([t.mean(axis=(1, 2)), t[:, 0, 0]], -1), jnp.asarray(x), 9)
  cells = [(r * 10, c * 10) for r in range(3) for c in range(3)]  # 10-pixel cells, offset (10 - 9) // 2 = 0
  want = np.mean([np.concatenate([x[:, r:r + 9, c:c + 9].mean(axis=(1, 2)), x[:, r, c]], -1) for r, c in cells], 0)
  np.testing.assert_allclose(feats, want, rtol=1e-5, atol=1e-6)
  assert grid_average(lambda t: t.mean(axis=(1, 2)), jnp.asarray(x), 0).shape == (2, 3)
  # 'grid_concat': the same tiles' features side by side in raster order.
  assert grid_tile_size(jigsaw, 32, "grid_concat") == 9
  cat = grid_average(lambda t: t.mean(axis=(1, 2)), jnp.asarray(x), 9, concat=True)
  want = np.concatenate([x[:, r:r + 9, c:c + 9].mean(axis=(1, 2)) for r, c in cells], -1)
  np.testing.assert_allclose(cat, want, rtol=1e-5, atol=1e-6)


def test_a_tile_backbone_represents_an_image_by_the_mean_over_its_grid_tiles():
  from sslax.evaluate.pretrained import random_backbone

  config, _ = load_config("relative_patch")  # tiny: 4-pixel tiles of 16-pixel views
  backbone = random_backbone(config)
  images = np.random.default_rng(1).integers(0, 256, size=(6, 16, 16, 3), dtype=np.uint8)
  grid = backbone.features(images, batch_size=6)
  tiles = [backbone.features(np.ascontiguousarray(images[:, r:r + 4, c:c + 4]), batch_size=6, representation="image")
           for r in (0, 5, 10) for c in (0, 5, 10)]  # cells of 16 // 3 = 5 pixels
  np.testing.assert_allclose(grid, np.mean(tiles, axis=0), rtol=1e-4, atol=1e-5)
  concat = backbone.features(images, batch_size=6, representation="grid_concat")
  np.testing.assert_allclose(concat, np.concatenate(tiles, axis=1), rtol=1e-4, atol=1e-5)
  whole = backbone.features(images, batch_size=6, representation="image")
  assert not np.allclose(grid, whole, atol=1e-3)


def test_masking_noise_masks_the_stated_fraction_of_whole_pixels():
  from sslax.methods.denoising_ae import corrupt

  x = jnp.asarray(np.random.default_rng(0).normal(size=(8, 32, 32, 3)).astype(np.float32))
  keys = jax.random.split(jax.random.PRNGKey(0), 8)
  y = np.asarray(corrupt(x, keys, "masking", 0.25))
  masked = (y == 0).all(axis=-1)
  assert abs(masked.mean() - 0.25) < 0.02
  np.testing.assert_array_equal(y[~masked], np.asarray(x)[~masked])  # The rest is untouched.
  assert 0.1 < masked.reshape(8, -1).mean(1).min() and not np.array_equal(masked[0], masked[1])  # Per example.
  g = np.asarray(corrupt(x, keys, "gaussian", 0.5)) - np.asarray(x)
  assert abs(g.std() - 0.5) < 0.01 and abs(g.mean()) < 0.01


def test_decoder_output_size_and_a_clear_error_for_bad_sizes():
  from sslax.models import ConvDecoder

  dec = ConvDecoder(width=16, num_upsamples=3)
  z = jnp.ones((2, 8))
  variables = dec.init(jax.random.PRNGKey(0), z, (16, 24), train=False)
  assert dec.apply(variables, z, (16, 24), train=False).shape == (2, 16, 24, 3)
  with pytest.raises(ValueError, match="multiples of 8"):
    dec.init(jax.random.PRNGKey(0), z, (20, 20), train=False)
  with pytest.raises(ConfigError, match="crop_size=20 must be a multiple of 8"):
    METHODS["denoising_ae"].validate_config(load_config("denoising_ae", **{"augment.crop_size": 20})[0])


PRETEXT = ("rotnet", "jigsaw", "relative_patch", "exemplar", "denoising_ae", "colorization", "split_brain", "counting",
           "context_encoder", "mae", "cpc")
# With gaps, jitter and colour dropping, the tiny network's relative-patch loss barely moves
# in 30 steps of 16 pairs (200 steps of 64: 2.20 -> 1.99); without them (5-pixel patches fill
# their cells) and with bigger batches it learns within the 30 steps.
# Colourisation's rebalanced loss on 16-image batches swings with the rare colours a batch
# holds (a rare bin's weight is up to 2Q / normaliser), so the test follows the plain
# soft-target cross-entropy (rebalance_mix=1); the weights are tested in test_pretext_dense.py.
OVERRIDES = {"relative_patch": {"batch_size": 64, "relative_patch.tile_size": 5, "relative_patch.colour_drop_prob": 0.0,
                                "optimizer.base_learning_rate": 0.4},
             "colorization": {"colorization.rebalance_mix": 1.0},
             # CPC: 16 images x 9 patches per step leave the tiny encoder's loss within noise of
             # chance (log 144) after 30 steps; 64 images without colour dropping go 6.31 -> 5.73.
             "cpc": {"batch_size": 64, "cpc.colour_drop_prob": 0.0, "optimizer.base_learning_rate": 0.4}}


@requires_cifar
@pytest.mark.parametrize("name", PRETEXT)
def test_loss_decreases_over_30_tiny_steps_on_cifar10(name, tmp_path):
  import jax

  from sslax import parallel, train
  from sslax.metrics import read_metrics

  config, _ = load_config(name, **{"data.train_split": "train[:1024]", "total_steps": 30, "warmup_steps": 0,
                                   "log_every_steps": 1, "knn.at_end": False, "checkpoint.every_steps": 30,
                                   **OVERRIDES.get(name, {})})
  train.train_and_evaluate(config, str(tmp_path), mesh=parallel.make_mesh(jax.devices()[:2]))
  losses = [r["loss"] for r in read_metrics(str(tmp_path)) if "loss" in r]
  assert len(losses) == 30 and np.isfinite(losses).all()
  assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.05, losses
  if name in PREVIEW_COLUMNS:  # The method's preview: 8 rows of the original and the method's columns.
    from PIL import Image

    preview = np.asarray(Image.open(tmp_path / "preview.png"))
    cell = 16 * 4 + 2  # crop_size x scale 4, plus padding.
    assert preview.shape == (8 * cell + 2, (1 + PREVIEW_COLUMNS[name]) * cell + 2, 3)


# Preview columns after the original: corrupted + reconstructed; L + colourised; L + colourised
# + lightness from ab; masked + inpainted; masked patches + reconstructed.
PREVIEW_COLUMNS = {"denoising_ae": 2, "colorization": 2, "split_brain": 3, "context_encoder": 2, "mae": 2}
