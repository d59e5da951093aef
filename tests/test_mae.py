"""MAE: the masked-patch loss, the exact random masks, the per-patch normalisation against NumPy,
the encoder's cost over the visible patches, the ViT's token subset and the preview.

The contract test (test_method_contract.py) runs its train steps on 8 devices against 1, and
test_pretext.py checks that its loss falls over 30 tiny steps on CIFAR-10 and writes a preview.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P
from reference import load_config

from sslax import parallel
from sslax.config_utils import ConfigError
from sslax.methods import METHODS
from sslax.methods.mae import masked_patch_loss, normalize_patches, random_masking
from sslax.models.vit import build_vit


def _method(**overrides):
  config, _ = load_config("mae", **overrides)
  return METHODS["mae"](config)


def _numpy_patches(images, p):
  """(n, H, W, C) -> (n, L, p*p*C) by slicing each patch out in row-major order."""
  n, h, w, _ = images.shape
  return np.stack([np.stack([images[i, r:r + p, c:c + p].reshape(-1) for r in range(0, h, p) for c in range(0, w, p)])
                   for i in range(n)])


def test_loss_counts_only_the_masked_patches():
  rng = np.random.default_rng(0)
  pred, target = (jnp.asarray(rng.normal(size=(4, 16, 12)), jnp.float32) for _ in range(2))
  mask = jnp.asarray(rng.permuted(np.tile([1.0] * 12 + [0.0] * 4, (4, 1)), axis=1), jnp.float32)
  loss = float(masked_patch_loss(pred, target, mask, None))
  visible, hidden = np.argwhere(np.asarray(mask) == 0)[0], np.argwhere(np.asarray(mask) == 1)[0]
  moved_visible = pred.at[visible[0], visible[1]].add(10.0)
  moved_hidden = pred.at[hidden[0], hidden[1]].add(10.0)
  assert float(masked_patch_loss(moved_visible, target, mask, None)) == loss
  assert float(masked_patch_loss(moved_hidden, target, mask, None)) > loss + 1.0
  grad = np.asarray(jax.grad(lambda x: masked_patch_loss(x, target, mask, None))(pred))
  np.testing.assert_array_equal(grad[np.asarray(mask) == 0], 0.0)
  assert (np.abs(grad[np.asarray(mask) == 1]).sum(-1) > 0).all()


@pytest.mark.parametrize("num_patches, ratio", [(16, 0.75), (64, 0.6), (49, 0.75), (256, 0.9)])
def test_mask_ratio_is_exact(num_patches, ratio):
  keep, mask = random_masking(jax.random.split(jax.random.PRNGKey(0), 32), num_patches, ratio)
  keep, mask = np.asarray(keep), np.asarray(mask)
  hidden = round(ratio * num_patches)
  assert keep.shape == (32, num_patches - hidden)
  np.testing.assert_array_equal(mask.sum(axis=1), hidden)
  for k, m in zip(keep, mask):  # The kept indices are distinct and exactly the visible patches.
    assert len(set(k)) == len(k)
    np.testing.assert_array_equal(np.flatnonzero(m == 0), np.sort(k))


def test_masks_differ_across_examples_and_steps_but_not_with_the_device_count():
  method = _method()
  n, size = 16, (16, 16)

  def masks(step, n_devices):
    mesh = parallel.make_mesh(jax.devices()[:n_devices])
    fn = jax.shard_map(lambda s: method.step_masks(s, n // n_devices, size, parallel.DATA_AXIS)[1], mesh=mesh,
                       in_specs=P(), out_specs=P(parallel.DATA_AXIS))
    return np.asarray(jax.jit(fn)(jnp.int32(step)))

  one, eight = masks(3, 1), masks(3, 8)
  np.testing.assert_array_equal(eight, one)
  np.testing.assert_array_equal(one, np.asarray(method.step_masks(jnp.int32(3), n, size, None)[1]))
  assert len({m.tobytes() for m in one}) == n  # Every example its own mask.
  assert not np.array_equal(masks(4, 1), one)  # A new mask at every step.


def test_norm_pix_targets_and_loss_match_numpy():
  rng = np.random.default_rng(1)
  images = rng.normal(size=(3, 8, 12, 3)).astype(np.float32)
  images[0, :4, :4] = 0.5  # A constant patch: variance 0, only eps keeps it finite.
  method = _method(**{"model.patch_size": 4})
  patches = _numpy_patches(images.astype(np.float64), 4)
  mean = patches.mean(-1, keepdims=True)
  target = (patches - mean) / np.sqrt(patches.var(-1, ddof=1, keepdims=True) + 1e-6)
  got = np.asarray(method.targets(jnp.asarray(images)))
  np.testing.assert_allclose(got, target, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(got[0, 0], 0.0)

  pred = rng.normal(size=target.shape)
  mask = np.zeros(target.shape[:2])
  mask[:, [0, 2, 3]] = 1.0
  mask[1, 5] = 1.0
  expected = (((pred - target) ** 2).mean(-1) * mask).sum() / mask.sum()
  loss = masked_patch_loss(jnp.asarray(pred, jnp.float32), method.targets(jnp.asarray(images)), jnp.asarray(mask), None)
  np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
  # Without norm_pix_loss the targets are the patches themselves.
  plain = _method(**{"model.patch_size": 4, "mae.norm_pix_loss": False})
  np.testing.assert_allclose(np.asarray(plain.targets(jnp.asarray(images))), patches, rtol=1e-6)
  # The preview's un-normalisation inverts the normalisation.
  normalised, mu, std = normalize_patches(jnp.asarray(patches, jnp.float32))
  np.testing.assert_allclose(np.asarray(normalised * std + mu), patches, atol=1e-5)


def test_encoder_flops_scale_with_the_visible_fraction():
  """ViT-Tiny's blocks over 16 visible patches of 64 (+ CLS: 17 of 65 tokens) against all of them.

  The Dense layers, linear in the tokens, dominate at width 192 (attention's T^2 part is
  T / (3 * width) of them: 11% over 65 tokens), so the ratio is close to 17/65 = 0.26: a
  little lower for the quadratic attention, a little higher for the patch embedding, which
  runs on all 64 patches before they are taken. Without the token subset the ratio is 1.
  """
  vit = build_vit("vit_tiny", patch_size=4, depth=2)
  x = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
  keep = jax.ShapeDtypeStruct((2, 16), jnp.int32)
  variables = jax.eval_shape(lambda: vit.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)), train=False))

  def flops(fn, *args):
    return jax.jit(fn).lower(variables, *args).compile().cost_analysis()["flops"]

  full = flops(lambda v, x: vit.apply(v, x, train=False), x)
  visible = flops(lambda v, x, k: vit.apply(v, x, train=False, keep_index=k), x, keep)
  assert 0.2 < visible / full < 0.35, (visible, full)


def test_vit_encodes_the_given_patches_at_their_positions():
  vit = build_vit("vit_test", patch_size=4)
  x = jnp.asarray(np.random.default_rng(2).normal(size=(2, 16, 16, 3)), jnp.float32)
  variables = vit.init(jax.random.PRNGKey(0), x, train=False)
  full = vit.apply(variables, x, train=False, return_tokens=True)
  every = jnp.tile(jnp.arange(16, dtype=jnp.int32), (2, 1))
  same = vit.apply(variables, x, train=False, return_tokens=True, keep_index=every)
  np.testing.assert_allclose(np.asarray(same["patches"]), np.asarray(full["patches"]), rtol=1e-5, atol=1e-6)
  # Shuffled: the same tokens in the given order (attention does not see the order, only the
  # position embeddings taken with each patch).
  order = jnp.asarray([np.random.default_rng(i).permutation(16) for i in range(2)], jnp.int32)
  shuffled = vit.apply(variables, x, train=False, return_tokens=True, keep_index=order)
  np.testing.assert_allclose(np.asarray(shuffled["patches"]),
                             np.take_along_axis(np.asarray(full["patches"]), np.asarray(order)[..., None], 1),
                             rtol=1e-4, atol=1e-5)
  # A subset sees only its patches: changing another patch leaves its tokens unchanged.
  subset = order[:, :4]
  other = int(order[0, 4])
  changed = x.at[0, (other // 4) * 4:(other // 4) * 4 + 4, (other % 4) * 4:(other % 4) * 4 + 4].add(1.0)
  a, b = (vit.apply(variables, v, train=False, keep_index=subset) for v in (x, changed))
  np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-6)


def test_preview_keeps_the_visible_patches_and_hides_the_masked_ones():
  from sslax.step import build_setup, create_train_state

  config, _ = load_config("mae")
  setup = build_setup(config, 32, mesh=parallel.make_mesh(jax.devices()[:1]))
  state = create_train_state(setup, jax.random.PRNGKey(0))
  images = jnp.asarray(np.random.default_rng(3).normal(size=(4, 16, 16, 3)), jnp.float32)
  keys = jax.random.split(jax.random.PRNGKey(1), 4)
  masked, reconstructed = setup.method.preview(setup.model, {"params": state.params, "batch_stats": {}}, images, keys)
  mask = np.asarray(setup.method.masks(keys, (16, 16))[1]).reshape(4, 4, 4)
  hidden = np.repeat(np.repeat(mask, 4, axis=1), 4, axis=2)[..., None] > 0
  assert masked.shape == reconstructed.shape == images.shape
  np.testing.assert_array_equal(np.asarray(masked)[np.broadcast_to(hidden, images.shape)], 0.0)
  visible = np.broadcast_to(~hidden, images.shape)
  np.testing.assert_array_equal(np.asarray(masked)[visible], np.asarray(images)[visible])
  np.testing.assert_array_equal(np.asarray(reconstructed)[visible], np.asarray(images)[visible])
  assert not np.allclose(np.asarray(reconstructed)[~visible], np.asarray(images)[~visible])


def test_config_errors_name_the_field():
  with pytest.raises(ConfigError, match=r"config\.model\.backbone='resnet18'"):
    METHODS["mae"].validate_config(load_config("mae", **{"model.backbone": "resnet18"})[0])
  from sslax.presets import conv_decoder

  with pytest.raises(ConfigError, match=r"vit_decoder"):
    METHODS["mae"].validate_config(load_config("mae", **{"model.decoder": conv_decoder(16)})[0])
  with pytest.raises(ConfigError, match=r"config\.mae\.mask_ratio=0\.99 hides 16 of the 16 patches"):
    METHODS["mae"].validate_config(load_config("mae", **{"mae.mask_ratio": 0.99})[0])
  with pytest.raises(ConfigError, match=r"crop_size=18 must be a multiple of config\.model\.patch_size=4"):
    METHODS["mae"].validate_config(load_config("mae", **{"augment.crop_size": 18})[0])
