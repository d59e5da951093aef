"""SimCLR's augmentation family as per-example JAX functions, run inside the train step.

Each example's randomness comes only from its own key, derived from
(seed, step, global example index) by `example_keys`, so a global batch gets the same
views however it is split over devices and processes.

Geometry is done with small interpolation matrices: a crop resized to S x S is
`Ry @ image @ Rx^T` with Ry (S, H) and Rx (S, W) holding (anti-aliased) bilinear weights;
a horizontal flip reverses the rows of Rx, and a Gaussian blur is a further pair of
(S, S) matrices. On CPUs and accelerators alike this is a few tiny matmuls per image,
with no gathers.
"""
from __future__ import annotations

import functools
import math
from typing import Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

# ITU-R 601 luma weights, as used by torchvision and TF for grayscale conversion.
_LUMA = (0.299, 0.587, 0.114)


def default_simclr_augment_config() -> ml_collections.ConfigDict:
  """SimCLR augmentation settings (CIFAR-10 values of Chen et al. 2020, appendix B.9).

  Returns:
    ConfigDict with crop_size, crop_scale, crop_ratio, flip_prob, color_jitter_prob,
    color_jitter_strength, brightness, contrast, saturation, hue, grayscale_prob,
    blur_prob (per view), blur_sigma, solarize_prob (per view).
  """
  c = ml_collections.ConfigDict()
  c.crop_size = 32
  c.crop_scale = (0.08, 1.0)
  c.crop_ratio = (3.0 / 4.0, 4.0 / 3.0)
  c.flip_prob = 0.5
  c.color_jitter_prob = 0.8
  c.color_jitter_strength = 0.5  # s: 0.5 on CIFAR, 1.0 on ImageNet.
  c.brightness = 0.8  # Each is multiplied by s, as in SimCLR.
  c.contrast = 0.8
  c.saturation = 0.8
  c.hue = 0.2
  c.grayscale_prob = 0.2
  c.blur_prob = (0.0, 0.0)  # Per view; (1.0, 0.1) on ImageNet (BYOL), off on CIFAR.
  c.blur_sigma = (0.1, 2.0)
  c.solarize_prob = (0.0, 0.0)  # Per view; (0.0, 0.2) on ImageNet (BYOL).
  # Multi-crop (SwAV, DINO): this many extra low-resolution crops per image, on top of the
  # global views; each has the photometric settings of the last global view.
  c.num_local_crops = 0
  c.local_crop_size = 16
  c.local_crop_scale = (0.05, 0.4)
  return c


def example_keys(seed, step, global_index: jax.Array) -> jax.Array:
  """Per-example keys fold_in(fold_in(PRNGKey(seed), step), index).

  Args:
    seed: integer seed (Python int or scalar array).
    step: training step (scalar int array or int).
    global_index: int (B,) positions of the examples in the global batch.

  Returns:
    uint32 (B, 2) raw PRNG keys.
  """
  base = jax.random.fold_in(jax.random.PRNGKey(seed), step)
  return jax.vmap(lambda i: jax.random.fold_in(base, i))(jnp.asarray(global_index, jnp.uint32))


def _per_view(values: Sequence[float] | float, view: int) -> float:
  if isinstance(values, (int, float)):
    return float(values)
  values = tuple(values)
  return float(values[min(view, len(values) - 1)])


def _crop_window(key, height: int, width: int, scale, ratio, attempts: int = 10):
  """(top, left, crop_h, crop_w) as floats, Inception-style (as torchvision/SimCLR).

  Samples `attempts` (area, log-aspect) candidates at once and keeps the first that
  fits; if none does, falls back to the largest central crop with the aspect ratio clamped.
  """
  k_area, k_ratio, k_top, k_left = jax.random.split(key, 4)
  area = height * width
  target = area * jax.random.uniform(k_area, (attempts,), minval=scale[0], maxval=scale[1])
  log_r = jax.random.uniform(k_ratio, (attempts,), minval=math.log(ratio[0]), maxval=math.log(ratio[1]))
  aspect = jnp.exp(log_r)
  cw = jnp.round(jnp.sqrt(target * aspect))
  ch = jnp.round(jnp.sqrt(target / aspect))
  fits = (cw >= 1) & (ch >= 1) & (cw <= width) & (ch <= height)
  first = jnp.argmax(fits)
  in_ratio = width / height
  # Python ints for in-memory images (static shapes); arrays for streamed images of varied sizes.
  rnd = round if isinstance(height, int) and isinstance(width, int) else jnp.round
  fb_w = jnp.where(in_ratio < ratio[0], width, jnp.where(in_ratio > ratio[1], rnd(height * ratio[1]), width))
  fb_h = jnp.where(in_ratio < ratio[0], rnd(width / ratio[0]), height)
  ch = jnp.where(fits.any(), ch[first], fb_h).astype(jnp.float32)
  cw = jnp.where(fits.any(), cw[first], fb_w).astype(jnp.float32)
  # Integer offsets, uniform over the valid positions.
  top = jnp.floor(jax.random.uniform(k_top) * (height - ch + 1))
  left = jnp.floor(jax.random.uniform(k_left) * (width - cw + 1))
  top = jnp.where(fits.any(), top, jnp.floor((height - ch) / 2))
  left = jnp.where(fits.any(), left, jnp.floor((width - cw) / 2))
  return top, left, ch, cw


def _crop_key(key: jax.Array, view: int) -> jax.Array:
  """The crop's key of view `view` of an example with key `key` (as simclr_view splits it)."""
  return jax.random.split(jax.random.fold_in(key, view), 8)[0]


def crop_boxes(seed: int, step: int, global_rows, heights, widths, *, view: int, scale, ratio) -> np.ndarray:
  """The random-resized-crop boxes the device would draw, computed on the host CPU.

  The streaming input decodes only each view's crop window (sslax/data/streaming.py); the
  window comes from the same key as the in-memory path's on-device crop, (seed, step, row of
  the global batch, view), so for images of the same size both paths crop the same boxes.

  Args:
    seed, step: the run's seed and the training step.
    global_rows: int (n,) rows of the examples in the global batch.
    heights, widths: int (n,) full image sizes.
    view: view index.
    scale, ratio: crop area and aspect ranges (config.augment.crop_scale/crop_ratio, or
      local_crop_scale for multi-crop's local views).

  Returns:
    int32 (n, 4) boxes (top, left, height, width).
  """
  if len(global_rows) == 0:
    return np.zeros((0, 4), np.int32)
  with jax.default_device(jax.local_devices(backend="cpu")[0]):
    boxes = _crop_boxes_jit(seed, step, np.asarray(global_rows, np.int32), np.asarray(heights, np.int32),
                            np.asarray(widths, np.int32), view, tuple(float(x) for x in scale),
                            tuple(float(x) for x in ratio))
  return np.asarray(boxes)


@functools.partial(jax.jit, static_argnums=(5, 6, 7))
def _crop_boxes_jit(seed, step, rows, heights, widths, view, scale, ratio):
  keys = example_keys(seed, step, rows)

  def one(key, h, w):
    top, left, ch, cw = _crop_window(_crop_key(key, view), h, w, scale, ratio)
    return jnp.stack([top, left, ch, cw]).astype(jnp.int32)

  return jax.vmap(one)(keys, heights, widths)


def resize_weights(start, length, in_size: int, out_size: int) -> jax.Array:
  """(out_size, in_size) bilinear weights resampling [start, start+length) to out_size pixels.

  Triangle (tent) filter widened by the downscale factor, i.e. anti-aliased bilinear as
  in `jax.image.resize(..., antialias=True)`; exact bilinear when upsampling. Rows are
  normalised, which at the borders equals edge clamping.
  """
  factor = length / out_size
  centers = start + (jnp.arange(out_size, dtype=jnp.float32) + 0.5) * factor - 0.5
  support = jnp.maximum(factor, 1.0)
  dist = jnp.abs(jnp.arange(in_size, dtype=jnp.float32)[None, :] - centers[:, None]) / support
  w = jnp.maximum(0.0, 1.0 - dist)
  return w / jnp.maximum(w.sum(axis=1, keepdims=True), 1e-8)


def _gray(x):
  return x[..., 0:1] * _LUMA[0] + x[..., 1:2] * _LUMA[1] + x[..., 2:3] * _LUMA[2]


def _fraction(y):
  """y - floor(y): the same as `y % 1.0` for floats, but without fmod, which XLA-CPU does not vectorise."""
  return y - jnp.floor(y)


def _rgb_to_hsv(x):
  r, g, b = x[..., 0], x[..., 1], x[..., 2]
  # The hue branch is chosen as argmax would choose it (the first largest channel) and the
  # maximum is taken from that branch, rather than testing `r == max(x)`: XLA may recompute
  # x in several fusions with different rounding, and an equality test across them can then
  # fail for every channel (seen as device-count-dependent colours).
  is_r = (r >= g) & (r >= b)
  is_g = ~is_r & (g >= b)
  maxc = jnp.where(is_r, r, jnp.where(is_g, g, b))
  minc = jnp.minimum(jnp.minimum(r, g), b)
  delta = maxc - minc
  inv_delta = 1.0 / jnp.where(delta > 0, delta, 1.0)
  s = jnp.where(maxc > 0, delta / jnp.where(maxc > 0, maxc, 1.0), 0.0)
  h = jnp.where(is_r, (g - b) * inv_delta, jnp.where(is_g, 2.0 + (b - r) * inv_delta, 4.0 + (r - g) * inv_delta))
  h = jnp.where(delta > 0, _fraction(h / 6.0), 0.0)
  return h, s, maxc


def _hsv_to_rgb(h, s, v):
  h6 = h * 6.0
  # Sector 0-5. h6 may round up to 6.0; sector 5 with f = 1 gives the same colour as sector 0
  # with f = 0, so clipping stands in for an (unvectorised) integer `% 6`.
  sector = jnp.clip(jnp.floor(h6), 0.0, 5.0)
  f = h6 - sector
  p, q, t = v * (1.0 - s), v * (1.0 - s * f), v * (1.0 - s * (1.0 - f))

  def pick(*by_sector):
    out = by_sector[5]
    for i in range(4, -1, -1):
      out = jnp.where(sector == i, by_sector[i], out)
    return out

  return jnp.stack([pick(v, q, p, p, t, v), pick(t, v, v, q, p, p), pick(p, p, t, v, v, q)], axis=-1)


def jitter_parameters(key: jax.Array, cfg):
  """The random draws of `color_jitter` for one image.

  Args:
    key: the image's colour-jitter key.
    cfg: augmentation config (color_jitter_strength, brightness, contrast, saturation, hue).

  Returns:
    (brightness factor, contrast factor, saturation factor, hue shift, order): the order is a
    permutation of 0 brightness, 1 contrast, 2 saturation, 3 hue.
  """
  s = cfg.color_jitter_strength
  kb, kc, ks, kh, kp = jax.random.split(key, 5)
  b = cfg.brightness * s
  c = cfg.contrast * s
  sat = cfg.saturation * s
  hue = cfg.hue * s
  fb = jax.random.uniform(kb, minval=max(0.0, 1 - b), maxval=1 + b)
  fc = jax.random.uniform(kc, minval=max(0.0, 1 - c), maxval=1 + c)
  fs = jax.random.uniform(ks, minval=max(0.0, 1 - sat), maxval=1 + sat)
  dh = jax.random.uniform(kh, minval=-hue, maxval=hue)
  return fb, fc, fs, dh, jax.random.permutation(kp, 4)


def color_jitter(x: jax.Array, key: jax.Array, cfg) -> jax.Array:
  """SimCLR's colour distortion: brightness, contrast, saturation and hue, in a random order.

  As torchvision's ColorJitter: brightness, contrast and saturation blend the image with
  black, its mean grey level or its per-pixel grey (`f * x + (1 - f) * ref`), the hue is
  rotated in HSV, and the image is clipped to [0, 1] after each change.

  Args:
    x: float (H, W, 3) image in [0, 1].
    key: PRNG key (the factors and the order of the four changes).
    cfg: augmentation config: color_jitter_strength s scales brightness, contrast,
      saturation and hue (see default_simclr_augment_config).

  Returns:
    float (H, W, 3) in [0, 1].
  """
  fb, fc, fs, dh, order = jitter_parameters(key, cfg)

  # Under vmap the order differs per image, and a `lax.switch` on it would compute all four
  # changes at each of the four positions: four HSV round trips per view. Instead the hue
  # rotation runs once, between the blends the order puts before it and those after it.
  hue_at = jnp.argmax(order == 3)
  slots = jnp.arange(3)
  blends = order[jnp.where(slots < hue_at, slots, slots + 1)]  # The order without the hue.
  factors = jnp.stack([fb, fc, fs])

  def blend(x, op, active):
    gray = _gray(x)
    ref = jnp.where(op == 1, jnp.mean(gray), jnp.where(op == 2, gray, 0.0))
    f = jnp.where(active, factors[op], 1.0)  # An inactive slot is the identity.
    return jnp.clip(f * x + (1.0 - f) * jnp.where(active, ref, 0.0), 0.0, 1.0)

  for slot in range(3):
    x = blend(x, blends[slot], slot < hue_at)
  h, sv, v = _rgb_to_hsv(x)
  x = jnp.clip(_hsv_to_rgb(_fraction(h + dh), sv, v), 0.0, 1.0)
  for slot in range(3):
    x = blend(x, blends[slot], slot >= hue_at)
  return x


def _blur_matrix(size: int, sigma) -> jax.Array:
  """(size, size) row-normalised Gaussian blur with a kernel of about 10% of the image."""
  radius = max(1, int(size * 0.1) // 2)
  pos = jnp.arange(size, dtype=jnp.float32)
  d = pos[:, None] - pos[None, :]
  w = jnp.exp(-0.5 * jnp.square(d / sigma)) * (jnp.abs(d) <= radius)
  return w / w.sum(axis=1, keepdims=True)


def simclr_view(image: jax.Array, key: jax.Array, cfg, view: int, size: int | None = None,
                scale: Sequence[float] | None = None, precropped: bool = False) -> jax.Array:
  """One augmented view of one image.

  Args:
    image: uint8 (H, W, 3).
    key: this example's key (from example_keys); the view index is folded in here.
    cfg: augmentation config (see default_simclr_augment_config).
    view: view index; selects the per-view blur and solarize probabilities.
    size: output size (default cfg.crop_size); multi-crop's local views are smaller.
    scale: random-resized-crop area range (default cfg.crop_scale).
    precropped: `image` is already this view's crop at the output size (the streaming input
      cropped it on the host with `crop_boxes`); only the flip and photometric steps run, with
      the same keys as for an in-memory image.

  Returns:
    float32 (S, S, 3) in [0, 1], S = size.
  """
  key = jax.random.fold_in(key, view)
  k_crop, k_flip, k_jit_p, k_jit, k_gray, k_blur_p, k_blur, k_sol = jax.random.split(key, 8)
  height, width = image.shape[0], image.shape[1]
  size = cfg.crop_size if size is None else size
  scale = cfg.crop_scale if scale is None else scale
  x = image.astype(jnp.float32) / 255.0

  if precropped:
    top, left, ch, cw = 0.0, 0.0, float(height), float(width)
  else:
    top, left, ch, cw = _crop_window(k_crop, height, width, tuple(scale), tuple(cfg.crop_ratio))
  ry = resize_weights(top, ch, height, size)
  rx = resize_weights(left, cw, width, size)
  rx = jnp.where(jax.random.uniform(k_flip) < cfg.flip_prob, rx[::-1], rx)
  x = jnp.einsum("sh,hwc,tw->stc", ry, x, rx, precision=jax.lax.Precision.HIGHEST)
  x = jnp.clip(x, 0.0, 1.0)

  if cfg.color_jitter_prob > 0:
    jittered = color_jitter(x, k_jit, cfg)
    x = jnp.where(jax.random.uniform(k_jit_p) < cfg.color_jitter_prob, jittered, x)
  if cfg.grayscale_prob > 0:
    x = jnp.where(jax.random.uniform(k_gray) < cfg.grayscale_prob, jnp.broadcast_to(_gray(x), x.shape), x)
  blur_p = _per_view(cfg.blur_prob, view)
  if blur_p > 0:
    sigma = jax.random.uniform(k_blur, minval=cfg.blur_sigma[0], maxval=cfg.blur_sigma[1])
    blur = _blur_matrix(size, sigma)
    blurred = jnp.einsum("sh,hwc,tw->stc", blur, x, blur, precision=jax.lax.Precision.HIGHEST)
    x = jnp.where(jax.random.uniform(k_blur_p) < blur_p, blurred, x)
  solarize_p = _per_view(cfg.solarize_prob, view)
  if solarize_p > 0:
    x = jnp.where(jax.random.uniform(k_sol) < solarize_p, jnp.where(x < 0.5, x, 1.0 - x), x)
  return x


def simclr_views(images: jax.Array, keys: jax.Array, cfg, num_views: int = 2) -> list[jax.Array]:
  """`num_views` augmented views of every image of a batch.

  Args:
    images: uint8 (B, H, W, 3).
    keys: (B, 2) per-example keys from example_keys.
    cfg: augmentation config.
    num_views: views per image; view v of example i uses fold_in(keys[i], v).

  Returns:
    list of num_views float32 (B, S, S, 3) arrays in [0, 1].
  """
  return [jax.vmap(lambda im, k, v=v: simclr_view(im, k, cfg, v))(images, keys) for v in range(num_views)]


def precropped_views(crops: Sequence[jax.Array], keys: jax.Array, cfg, num_global: int = 2) -> list[jax.Array]:
  """multicrop_views for views the streaming input already cropped (global views, then local).

  Args:
    crops: uint8 (B, s, s, 3) per view, from sslax.data.streaming (batch 'view0'.., 'local0'..).
    keys: (B, 2) per-example keys from example_keys.
    cfg: augmentation config.
    num_global: number of full-size views.

  Returns:
    list of float32 arrays in [0, 1], as multicrop_views.
  """
  return [jax.vmap(lambda im, k, v=v: simclr_view(im, k, cfg, v, size=im.shape[0], precropped=True))(crop, keys)
          for v, crop in enumerate(crops)]


def multicrop_views(images: jax.Array, keys: jax.Array, cfg, num_global: int = 2) -> list[jax.Array]:
  """`num_global` views at cfg.crop_size, then cfg.num_local_crops local views (multi-crop,
  Caron et al. 2020) at cfg.local_crop_size from crops of cfg.local_crop_scale of the area.

  Local view j uses view index num_global + j, so every view has its own key and the views
  do not depend on the device count; photometric per-view settings (blur, solarize) of
  local views are those of the last global view.

  Args:
    images: uint8 (B, H, W, 3).
    keys: (B, 2) per-example keys from example_keys.
    cfg: augmentation config.
    num_global: number of full-size views.

  Returns:
    list of float32 arrays in [0, 1]: num_global (B, S, S, 3), then the (B, s, s, 3) local views.
  """
  views = simclr_views(images, keys, cfg, num_views=num_global)
  for j in range(cfg.get("num_local_crops", 0)):
    view = num_global + j
    views.append(jax.vmap(lambda im, k: simclr_view(im, k, cfg, view, size=cfg.local_crop_size,
                                                     scale=cfg.local_crop_scale))(images, keys))
  return views
