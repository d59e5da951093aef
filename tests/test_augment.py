"""On-device SimCLR augmentations against NumPy references, determinism, and device-count independence."""
import colorsys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from sslax import augment, parallel
from sslax.augment import views as views_lib


def _images(n=16, size=32, seed=0):
  return np.random.default_rng(seed).integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)


def _cfg(**overrides):
  cfg = augment.default_simclr_augment_config()
  cfg.crop_size = 24
  cfg.update(overrides)
  return cfg


IDENTITY = dict(crop_size=32, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip_prob=0.0, color_jitter_prob=0.0,
                grayscale_prob=0.0)


def _numpy_blur(x, sigma, radius):
  """Separable Gaussian truncated at `radius`, each output pixel normalised over the taps inside the image."""
  out = np.zeros_like(x)
  size = x.shape[0]
  for axis in (0, 1):
    out = np.zeros_like(x)
    for i in range(size):
      taps = [j for j in range(size) if abs(i - j) <= radius]
      w = np.array([np.exp(-0.5 * ((i - j) / sigma) ** 2) for j in taps])
      picked = np.take(x, taps, axis=axis)
      out_slice = np.tensordot(w / w.sum(), picked, axes=([0], [axis]))
      if axis == 0:
        out[i] = out_slice
      else:
        out[:, i] = out_slice
    x = out
  return out


def test_blur_and_solarize_match_numpy_references():
  images = _images(4)
  x = images.astype(np.float64) / 255.0
  keys = augment.example_keys(0, 0, np.arange(4))
  blurred = augment.simclr_views(images, keys, _cfg(**IDENTITY, blur_prob=(1.0, 1.0), blur_sigma=(1.3, 1.3)),
                                 num_views=1)[0]
  radius = max(1, int(32 * 0.1) // 2)  # A kernel of about 10% of the image, as SimCLR's.
  for b in range(4):
    np.testing.assert_allclose(np.asarray(blurred[b]), _numpy_blur(x[b], 1.3, radius), atol=1e-5)
  solarized = augment.simclr_views(images, keys, _cfg(**IDENTITY, solarize_prob=(1.0, 1.0)), num_views=1)[0]
  np.testing.assert_allclose(np.asarray(solarized), np.where(x < 0.5, x, 1.0 - x), atol=1e-6)


def test_same_key_same_view_and_two_views_differ():
  cfg = _cfg()
  images = _images()
  fn = jax.jit(lambda x, k: augment.simclr_views(x, k, cfg))
  a = fn(images, augment.example_keys(3, 11, np.arange(16)))
  b = fn(images, augment.example_keys(3, 11, np.arange(16)))
  for va, vb in zip(a, b):
    np.testing.assert_array_equal(np.asarray(va), np.asarray(vb))
  diff = np.abs(np.asarray(a[0]) - np.asarray(a[1])).reshape(16, -1).mean(axis=1)
  assert np.all(diff > 1e-3), "the two views of every example must differ"
  # A different step (or seed) gives different views of the same images.
  c = fn(images, augment.example_keys(3, 12, np.arange(16)))
  assert np.abs(np.asarray(c[0]) - np.asarray(a[0])).mean() > 1e-2


def test_identity_config_returns_the_resized_image():
  # Full-size crop, no flip, no colour: the view is the image itself (crop size = image size).
  cfg = _cfg(crop_size=32, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip_prob=0.0,
             color_jitter_prob=0.0, grayscale_prob=0.0)
  images = _images(4)
  out = augment.simclr_views(images, augment.example_keys(0, 0, np.arange(4)), cfg, num_views=1)[0]
  np.testing.assert_allclose(np.asarray(out), images / 255.0, atol=1e-6)


def test_flip_and_grayscale_do_what_they_say():
  images = _images(4)
  keys = augment.example_keys(0, 0, np.arange(4))
  base = dict(crop_size=32, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), color_jitter_prob=0.0)
  flipped = augment.simclr_views(images, keys, _cfg(flip_prob=1.0, grayscale_prob=0.0, **base), num_views=1)[0]
  np.testing.assert_allclose(np.asarray(flipped), images[:, :, ::-1] / 255.0, atol=1e-6)
  gray = np.asarray(augment.simclr_views(images, keys, _cfg(flip_prob=0.0, grayscale_prob=1.0, **base),
                                         num_views=1)[0])
  np.testing.assert_allclose(gray[..., 0], gray[..., 1], atol=1e-6)
  expected = (images / 255.0) @ np.array([0.299, 0.587, 0.114])
  np.testing.assert_allclose(gray[..., 0], expected, atol=1e-5)


def test_hue_rotation_round_trips_through_hsv():
  x = jnp.asarray(_images(2)[..., :] / 255.0, jnp.float32)
  h, s, v = views_lib._rgb_to_hsv(x)
  np.testing.assert_allclose(np.asarray(views_lib._hsv_to_rgb(h, s, v)), np.asarray(x), atol=1e-5)


def _numpy_color_jitter(x, fb, fc, fs, dh, order):
  """torchvision's ColorJitter on one float image, per pixel with colorsys, in the given order."""
  luma = np.array([0.299, 0.587, 0.114])
  for op in order:
    if op == 0:
      x = fb * x
    elif op == 1:
      x = fc * x + (1 - fc) * (x @ luma).mean()
    elif op == 2:
      x = fs * x + (1 - fs) * (x @ luma)[..., None]
    else:
      hsv = [colorsys.rgb_to_hsv(*pixel) for pixel in x.reshape(-1, 3)]
      x = np.array([colorsys.hsv_to_rgb((h + dh) % 1.0, s, v) for h, s, v in hsv]).reshape(x.shape)
    x = np.clip(x, 0.0, 1.0)
  return x


def test_color_jitter_matches_a_per_pixel_reference_in_every_order():
  cfg = _cfg(color_jitter_strength=1.0)
  x = _images(24, size=8, seed=3) / 255.0
  x[0, :2] = 0.5  # Grey pixels (no hue) and saturated ones (clipping) too.
  x[1, :2] = [1.0, 0.0, 0.0]
  keys = jax.random.split(jax.random.PRNGKey(7), len(x))
  got = np.asarray(jax.jit(jax.vmap(lambda im, k: augment.color_jitter(im, k, cfg)))(jnp.asarray(x, jnp.float32), keys))
  params = [np.asarray(p) for p in jax.vmap(lambda k: views_lib.jitter_parameters(k, cfg))(keys)]
  hue_positions = set()
  for i in range(len(x)):
    fb, fc, fs, dh, order = (p[i] for p in params)
    hue_positions.add(int(np.argmax(order == 3)))
    np.testing.assert_allclose(got[i], _numpy_color_jitter(x[i], fb, fc, fs, dh, order), atol=2e-5, err_msg=f"image {i}")
  assert hue_positions == {0, 1, 2, 3}  # The hue rotation was tested at every place in the order.


def test_crop_windows_follow_scale_and_ratio():
  keys = augment.example_keys(0, 0, np.arange(2000))
  top, left, ch, cw = jax.vmap(lambda k: views_lib._crop_window(k, 32, 32, (0.2, 0.6), (0.75, 4 / 3)))(keys)
  top, left, ch, cw = map(np.asarray, (top, left, ch, cw))
  assert np.all(top >= 0) and np.all(left >= 0) and np.all(top + ch <= 32) and np.all(left + cw <= 32)
  area = ch * cw / 1024
  assert 0.15 < area.min() and area.max() < 0.7  # Rounding to whole pixels widens the range a little.
  assert 0.3 < area.mean() < 0.5


@pytest.mark.parametrize("num_devices", [2, 8])
def test_views_do_not_depend_on_the_device_count(num_devices):
  """The same global batch gets the same views on 1 and on N devices (keys from global indices)."""
  cfg = _cfg(blur_prob=(1.0, 0.1), solarize_prob=(0.0, 0.2))
  images = _images(16)

  def local_views(images, step):
    n = images.shape[0]
    index = jax.lax.axis_index(parallel.DATA_AXIS) * n + jnp.arange(n)
    return tuple(augment.simclr_views(images, augment.example_keys(0, step, index), cfg))

  results = []
  for n in (1, num_devices):
    mesh = parallel.make_mesh(jax.devices()[:n])
    fn = jax.jit(jax.shard_map(local_views, mesh=mesh, in_specs=(P(parallel.DATA_AXIS), P()),
                               out_specs=P(parallel.DATA_AXIS)))
    results.append([np.asarray(v) for v in fn(parallel.to_global_batch(images, mesh), jnp.int32(5))])
  for one, many in zip(*results):
    # Different XLA programs round differently in the last bit; no discontinuity may amplify that.
    np.testing.assert_allclose(many, one, atol=1e-5)


def test_preview_grid_layout():
  from sslax.augment.preview import view_grid

  images = _images(3)
  views = [np.full((3, 16, 16, 3), 0.5, np.float32)] * 2
  grid = view_grid(images, views, scale=2, pad=1)
  assert grid.dtype == np.uint8 and grid.shape == (3 * 65 + 1, 3 * 65 + 1, 3)
  np.testing.assert_array_equal(grid[1:65, 1:65], np.repeat(np.repeat(images[0], 2, 0), 2, 1))
