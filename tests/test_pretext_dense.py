"""Colour, inpainting and counting pretext tasks: their transforms against independent
references, and the context encoder's separation of generator and discriminator updates."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from reference import load_config

from sslax import parallel
from sslax.augment import color
from sslax.config_utils import ConfigError
from sslax.methods import METHODS


def _colours(n=2000, seed=0):
  rgb = np.random.default_rng(seed).random((n, 3))
  corners = np.array(np.meshgrid([0, 1], [0, 1], [0, 1], indexing="ij")).reshape(3, -1).T
  return np.concatenate([rgb, corners, [[1e-3, 2e-3, 3e-3], [0.5, 0.5, 0.5]]])


def test_lab_conversion_matches_scikit_image():
  skimage_color = pytest.importorskip("skimage.color")
  rgb = _colours()
  lab = skimage_color.rgb2lab(rgb[None])[0]
  np.testing.assert_allclose(np.asarray(color.rgb_to_lab(rgb)), lab, atol=1e-3)
  np.testing.assert_allclose(np.asarray(color.lab_to_rgb(lab)), skimage_color.lab2rgb(lab[None])[0], atol=1e-3)
  np.testing.assert_allclose(np.asarray(color.lab_to_rgb(color.rgb_to_lab(rgb))), rgb, atol=1e-3)  # Round trip.


def test_ab_quantisation_round_trip():
  centres = color.ab_bin_centres()
  assert centres.shape[1] == 2 and 250 <= len(centres) <= 320
  np.testing.assert_array_equal(centres % 10, 0)  # The 10-unit grid.
  ab = np.asarray(color.rgb_to_lab(_colours()))[:, 1:]
  nearest = centres[np.asarray(color.nearest_bin(jnp.asarray(ab), jnp.asarray(centres)))]
  # Every in-gamut colour has its own grid cell among the bins: within half a cell per axis.
  assert np.abs(nearest - ab).max() <= 5.0 + 1e-4
  soft = np.asarray(color.soft_encode(jnp.asarray(ab), jnp.asarray(centres)))
  np.testing.assert_allclose(soft.sum(-1), 1.0, atol=1e-5)
  assert ((soft > 0).sum(-1) == 5).all()
  # Decoding the soft encoding (its mean, T = 1) returns the colour to within the kernel's pull.
  decoded = np.asarray(color.annealed_mean(jnp.log(jnp.asarray(soft) + 1e-30), jnp.asarray(centres), 1.0))
  assert np.abs(decoded - ab).max() < 5.0
  # Annealing to a low temperature gives the mode: the nearest bin.
  # (Colours almost halfway between two bins are left out: there the two weights nearly tie.)
  mode = np.asarray(color.annealed_mean(jnp.log(jnp.asarray(soft) + 1e-30), jnp.asarray(centres), 1e-3))
  top2 = np.sort(soft, axis=-1)[:, -2:]
  clear = top2[:, 1] > 1.05 * top2[:, 0]
  assert clear.mean() > 0.8
  np.testing.assert_allclose(mode[clear], nearest[clear], atol=1e-2)


def test_rebalancing_weights_against_a_direct_computation():
  centres = color.ab_bin_centres()
  counts = np.random.default_rng(0).integers(0, 1000, len(centres)).astype(np.float64)
  counts[:10] = 0
  p = counts / counts.sum()
  d2 = ((centres[:, None] - centres[None]) ** 2).sum(-1)
  smooth = np.exp(-d2 / 50.0) @ p
  smooth /= smooth.sum()
  w = 1.0 / (0.5 * smooth + 0.5 / len(centres))
  w /= (smooth * w).sum()
  got = np.asarray(color.rebalancing_weights(jnp.asarray(counts, jnp.float32), jnp.asarray(centres), 0.5))
  np.testing.assert_allclose(got, w, rtol=1e-4)
  assert got[np.argmin(smooth)] > 1 > got[np.argmax(smooth)]  # Rare colours weigh more.
  uniform = np.asarray(color.rebalancing_weights(jnp.zeros(len(centres)), jnp.asarray(centres), 0.5))
  assert np.isfinite(uniform).all() and np.ptp(uniform) < 0.5  # No counts yet: nearly equal (edges smooth less).


def test_lightness_backbone_sees_only_lightness():
  """The colourisation backbone's features depend on L alone, also in evaluation."""
  from sslax.models import build_backbone

  config, _ = load_config("colorization")
  mean, std = np.asarray(config.data.mean), np.asarray(config.data.std)
  net = build_backbone(config.model, normalization=(config.data.mean, config.data.std))
  lab = np.asarray(color.rgb_to_lab(np.random.default_rng(0).random((2, 16, 16, 3))))
  recoloured = lab.copy()
  recoloured[..., 1:] *= 0.3  # Same L, other colours (still in gamut).
  images = [(np.asarray(color.lab_to_rgb(x)) - mean) / std for x in (lab, recoloured)]
  variables = net.init(jax.random.PRNGKey(0), jnp.asarray(images[0], jnp.float32), train=False)
  f1, f2 = (np.asarray(net.apply(variables, jnp.asarray(x, jnp.float32), train=False)) for x in images)
  np.testing.assert_allclose(f1, f2, rtol=1e-3, atol=1e-4)
  assert np.abs(images[0] - images[1]).max() > 0.1


def test_split_decoder_reads_each_half_of_the_features_for_its_channels():
  from sslax.models import SplitDecoder

  dec = SplitDecoder(width=16, num_upsamples=1, out_channels=(5, 3))
  z = jnp.asarray(np.random.default_rng(0).normal(size=(2, 8)), jnp.float32)
  variables = dec.init(jax.random.PRNGKey(0), z, (4, 4), train=False)
  out = np.asarray(dec.apply(variables, z, (4, 4), train=False))
  other = np.asarray(dec.apply(variables, z.at[:, 4:].set(0.0), (4, 4), train=False))
  assert out.shape == (2, 4, 4, 8)
  np.testing.assert_array_equal(out[..., :5], other[..., :5])  # The L half's ab logits ignore the ab half.
  assert np.abs(out[..., 5:] - other[..., 5:]).max() > 0


def test_channel_prediction_configs_are_checked():
  with pytest.raises(ConfigError, match="config.model.input='lightness'"):
    METHODS["colorization"].validate_config(load_config("colorization", **{"model.input": "rgb"})[0])
  with pytest.raises(ConfigError, match="config.model.input='split_brain'"):
    METHODS["split_brain"].validate_config(load_config("split_brain", **{"model.input": "lightness"})[0])
  with pytest.raises(ConfigError, match="decoder.out_channels"):
    METHODS["colorization"].validate_config(load_config("colorization", **{"model.decoder.out_channels": 313})[0])


def test_lightness_bins():
  from sslax.methods.split_brain import lightness_bins

  np.testing.assert_array_equal(np.asarray(lightness_bins(jnp.array([0.0, 1.99, 2.0, 99.9, 100.0]), 50)),
                                [0, 0, 1, 49, 49])


@pytest.mark.parametrize("kind", ["central", "random_block", "random_region"])
def test_inpainting_masks_cover_the_stated_region(kind):
  from sslax.methods.context_encoder import NUM_BLOCKS, make_masks

  size, n = 16, 64
  masks = np.asarray(make_masks(jax.random.split(jax.random.PRNGKey(0), n), size, kind, 0.25))[..., 0]
  assert masks.shape == (n, size, size) and set(np.unique(masks)) <= {0.0, 1.0}
  area = masks.mean(axis=(1, 2))
  if kind == "central":
    expected = np.zeros((size, size))
    expected[4:12, 4:12] = 1
    np.testing.assert_array_equal(masks, np.broadcast_to(expected, masks.shape))
  elif kind == "random_block":
    assert (area <= 0.25).all() and (area >= 1 / NUM_BLOCKS * 0.25).all()
    for m in masks:  # A union of 4x4 squares: every hidden pixel lies in a fully hidden 4x4 square.
      covered = np.zeros_like(m)
      for i in range(size - 3):
        for j in range(size - 3):
          if m[i:i + 4, j:j + 4].all():
            covered[i:i + 4, j:j + 4] = 1
      np.testing.assert_array_equal(covered, m)
  else:
    np.testing.assert_allclose(area, 0.25, atol=1 / size**2)
  if kind != "central":
    assert not np.array_equal(masks[0], masks[1])  # Per example.


def test_counting_tiles_and_downsampling():
  from sslax.methods.counting import downsample, quadrants

  x = np.random.default_rng(0).normal(size=(64, 8, 8, 3)).astype(np.float32)
  tiles = [np.asarray(t) for t in quadrants(jnp.asarray(x))]
  np.testing.assert_array_equal(np.block([[tiles[0][0, ..., 0], tiles[1][0, ..., 0]],
                                          [tiles[2][0, ..., 0], tiles[3][0, ..., 0]]]), x[0, ..., 0])
  down = np.asarray(downsample(jnp.asarray(x), jax.random.split(jax.random.PRNGKey(0), 64)))
  assert down.shape == (64, 4, 4, 3)
  box = x.reshape(64, 4, 2, 4, 2, 3).mean(axis=(2, 4))
  is_box = np.isclose(down, box, atol=1e-5).all(axis=(1, 2, 3))
  assert 0 < is_box.sum() < 64  # Box filtering for some images, other filters for the rest.
  # A constant image stays constant under every filter.
  const = np.asarray(downsample(jnp.ones((8, 8, 8, 3)), jax.random.split(jax.random.PRNGKey(1), 8)))
  np.testing.assert_allclose(const, 1.0, atol=1e-5)


def _context_encoder(**overrides):
  from sslax.step import build_setup, create_train_state

  config, _ = load_config("context_encoder", **{"model.backbone": "vit_test", **overrides})
  setup = build_setup(config, 32, mesh=parallel.make_mesh(jax.devices()[:1]))
  return setup, create_train_state(setup, jax.random.PRNGKey(0))


def _generator_grads_and_discriminator(setup, state, views):
  from jax.sharding import PartitionSpec as P

  def run(params, method_state):
    def loss(p):
      out = setup.method.loss(setup.model, p, state.batch_stats, method_state, views, step=state.step,
                              axis_name=parallel.DATA_AXIS)
      return out.loss, out.method_state

    return jax.grad(loss, has_aux=True)(params)

  return jax.jit(jax.shard_map(run, mesh=setup.mesh, in_specs=(P(), P()), out_specs=P()))(state.params,
                                                                                         state.method_state)


def test_context_encoder_generator_and_discriminator_updates_are_separate():
  """Each loss switched off in turn: the discriminator's loss never moves the encoder-decoder,
  and the encoder-decoder's loss never moves the discriminator."""
  views = [jnp.asarray(np.random.default_rng(0).normal(size=(16, 16, 16, 3)), jnp.float32)]
  setup, state = _context_encoder()
  method = setup.method
  grads, new_ms = _generator_grads_and_discriminator(setup, state, views)

  # Reference, written out: the masks, the masked L2 and one Adam step of the discriminator.
  from jax.sharding import PartitionSpec as P

  from sslax.methods.common import method_keys

  masks = method.masks(method_keys(setup.config, state.step, 16, None, stream=__import__("zlib").crc32(
      b"context_encoder")), 16)
  variables = lambda p: {"params": p, "batch_stats": state.batch_stats}
  recon = lambda p: setup.model.apply(variables(p), views[0] * (1 - masks), train=True, pretext=True,
                                      mutable=["batch_stats"])[0]["reconstruction"]
  l2 = lambda p: jnp.mean(jnp.sum(masks * (recon(p) - views[0]) ** 2, axis=(1, 2, 3)) / (masks.sum(axis=(1, 2, 3)) * 3))
  # The model's BatchNorm reads the mesh axis, so the reference runs on the (1-device) mesh too.
  on_mesh = lambda fn: jax.jit(jax.shard_map(fn, mesh=setup.mesh, in_specs=P(), out_specs=P()))
  fake = views[0] * (1 - masks) + on_mesh(recon)(state.params) * masks
  d = method.discriminator
  d_loss = lambda p: jnp.mean(optax.sigmoid_binary_cross_entropy(d.apply({"params": p}, views[0]), 1.0)
                              + optax.sigmoid_binary_cross_entropy(d.apply({"params": p}, fake), 0.0))
  d_grads = jax.grad(d_loss)(state.method_state["discriminator"])
  updates, _ = method.discriminator_tx.update(d_grads, state.method_state["discriminator_opt_state"],
                                              state.method_state["discriminator"])
  expected_d = optax.apply_updates(state.method_state["discriminator"], updates)
  for a, b in zip(jax.tree.leaves(new_ms["discriminator"]), jax.tree.leaves(expected_d), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
  moved = max(float(jnp.abs(a - b).max()) for a, b in zip(jax.tree.leaves(expected_d),
                                                          jax.tree.leaves(state.method_state["discriminator"])))
  assert moved > 1e-5

  # Adversarial term off: the generator's gradient is exactly the weighted L2 gradient.
  setup0, state0 = _context_encoder(**{"context_encoder.adversarial_weight": 0.0})
  grads0, new_ms0 = _generator_grads_and_discriminator(setup0, state0, views)
  expected = jax.tree.map(lambda g: 0.999 * g, on_mesh(jax.grad(l2))(state.params))
  for a, b in zip(jax.tree.leaves(grads0), jax.tree.leaves(expected), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7)
  # ... and the discriminator's step is the same with or without the generator's adversarial loss.
  for a, b in zip(jax.tree.leaves(new_ms0["discriminator"]), jax.tree.leaves(new_ms["discriminator"]), strict=True):
    np.testing.assert_array_equal(a, b)

  # Reconstruction term off: the generator's gradient is that of -log D'(composite) under the
  # updated, constant discriminator D' (nothing of D's own loss reaches the generator).
  setup1, state1 = _context_encoder(**{"context_encoder.reconstruction_weight": 0.0})
  grads1, _ = _generator_grads_and_discriminator(setup1, state1, views)
  adv = lambda p: jnp.mean(optax.sigmoid_binary_cross_entropy(
      d.apply({"params": expected_d}, views[0] * (1 - masks) + recon(p) * masks), 1.0))
  expected1 = jax.tree.map(lambda g: 0.001 * g, on_mesh(jax.grad(adv))(state.params))
  for a, b in zip(jax.tree.leaves(grads1), jax.tree.leaves(expected1), strict=True):
    np.testing.assert_allclose(a, b, rtol=2e-3, atol=1e-8)
  assert max(float(jnp.abs(g).max()) for g in jax.tree.leaves(grads1["backbone"])) > 0
