"""CIE Lab on device and the quantised colour spaces of the colourisation pretext tasks.

`rgb_to_lab` / `lab_to_rgb` follow the sRGB (D65, 2-degree observer) formulas that
scikit-image uses, written with `jax.numpy` so they run inside the jitted step. The ab
plane is quantised as Zhang, Isola & Efros (2016) do: a grid of 10 units, keeping the bins
that in-gamut sRGB colours reach (`ab_bin_centres`), with their soft encoding (5 nearest
bins, Gaussian sigma 5), class-rebalancing weights and annealed-mean decoding.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

# sRGB (linear) -> XYZ and the D65 white point, as in skimage.color.
_XYZ_FROM_RGB = np.array([[0.412453, 0.357580, 0.180423],
                          [0.212671, 0.715160, 0.072169],
                          [0.019334, 0.119193, 0.950227]])
_RGB_FROM_XYZ = np.linalg.inv(_XYZ_FROM_RGB)
_WHITE_D65 = np.array([0.95047, 1.0, 1.08883])
AB_GRID = 10.0  # Zhang et al.'s bin size in the ab plane.
AB_RANGE = 110.0  # |a|, |b| of sRGB colours stay below this; model inputs are ab / AB_RANGE.


def rgb_to_lab(rgb: jax.Array) -> jax.Array:
  """sRGB in [0, 1] -> CIE Lab (L in [0, 100], a and b about [-110, 110]).

  Args:
    rgb: (..., 3) float sRGB values in [0, 1].

  Returns:
    (..., 3) float32 Lab, as skimage.color.rgb2lab (D65, 2 degrees).
  """
  rgb = jnp.clip(jnp.asarray(rgb, jnp.float32), 0.0, 1.0)
  linear = jnp.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
  xyz = linear @ jnp.asarray(_XYZ_FROM_RGB.T, jnp.float32) / jnp.asarray(_WHITE_D65, jnp.float32)
  # The cube root's branch is only taken above the threshold, so its infinite slope at 0 never
  # reaches a gradient.
  f = jnp.where(xyz > 0.008856, jnp.cbrt(jnp.maximum(xyz, 0.008856)), 7.787 * xyz + 16.0 / 116.0)
  fx, fy, fz = f[..., 0], f[..., 1], f[..., 2]
  return jnp.stack([116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)], axis=-1)


def lab_to_rgb(lab: jax.Array) -> jax.Array:
  """CIE Lab -> sRGB clipped to [0, 1] (the inverse of `rgb_to_lab`; skimage.color.lab2rgb).

  Args:
    lab: (..., 3) Lab values.

  Returns:
    (..., 3) float32 sRGB in [0, 1].
  """
  lab = jnp.asarray(lab, jnp.float32)
  fy = (lab[..., 0] + 16.0) / 116.0
  fx = fy + lab[..., 1] / 500.0
  fz = jnp.maximum(fy - lab[..., 2] / 200.0, 0.0)
  f = jnp.stack([fx, fy, fz], axis=-1)
  xyz = jnp.where(f > 0.2068966, f ** 3, (f - 16.0 / 116.0) / 7.787) * jnp.asarray(_WHITE_D65, jnp.float32)
  linear = xyz @ jnp.asarray(_RGB_FROM_XYZ.T, jnp.float32)
  rgb = jnp.where(linear > 0.0031308, 1.055 * jnp.maximum(linear, 0.0031308) ** (1 / 2.4) - 0.055, 12.92 * linear)
  return jnp.clip(rgb, 0.0, 1.0)


def unnormalize(images: jax.Array, mean, std) -> jax.Array:
  """Model inputs (normalised per channel) back to RGB in [0, 1]."""
  return jnp.clip(images.astype(jnp.float32) * jnp.asarray(std, jnp.float32) + jnp.asarray(mean, jnp.float32), 0, 1)


def lab_inputs(images: jax.Array, mean, std) -> tuple[jax.Array, jax.Array]:
  """The split model inputs of normalised RGB images: (L / 50 - 1, ab / 110), both about [-1, 1].

  Args:
    images: (..., 3) normalised images (the data pipeline's output).
    mean, std: the per-channel normalisation (config.data.mean/std).

  Returns:
    ((..., 1) lightness input, (..., 2) colour input).
  """
  lab = rgb_to_lab(unnormalize(images, mean, std))
  return lab[..., :1] / 50.0 - 1.0, lab[..., 1:] / AB_RANGE


@functools.lru_cache(maxsize=None)
def ab_bin_centres() -> np.ndarray:
  """The in-gamut ab bins: (Q, 2) centres on the 10-unit grid that sRGB colours reach.

  Every colour of a dense sampling of the sRGB cube (a 64^3 grid plus its six faces at
  256 x 256) is assigned to its nearest grid point; the bins hit are kept, in row-major
  (a, b) order. This gives Q = 261 bins; Zhang et al. (2016) keep Q = 313 with their gamut
  test. The difference is which bins at the gamut's edge count, where almost no
  natural-image pixel falls.
  """
  g = np.linspace(0.0, 1.0, 64)
  cube = np.stack(np.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3)
  f = np.linspace(0.0, 1.0, 256)
  u, v = (a.reshape(-1) for a in np.meshgrid(f, f, indexing="ij"))
  faces = [np.stack(np.roll([u, v, np.full_like(u, side)], shift, axis=0), -1) for side in (0.0, 1.0)
           for shift in range(3)]
  rgb = np.concatenate([cube] + faces)
  ab = np.asarray(jax.jit(rgb_to_lab)(rgb))[:, 1:]
  grid = np.unique(np.round(ab / AB_GRID).astype(np.int64), axis=0)
  return (grid * AB_GRID).astype(np.float32)


def soft_encode(ab: jax.Array, centres: jax.Array, neighbours: int = 5, sigma: float = 5.0) -> jax.Array:
  """Zhang et al.'s soft encoding: each ab value spread over its nearest bins with Gaussian weights.

  Args:
    ab: (..., 2) ab values.
    centres: (Q, 2) bin centres.
    neighbours: bins that get weight.
    sigma: Gaussian kernel width in ab units.

  Returns:
    (..., Q) float32 distributions (rows sum to 1).
  """
  d2 = jnp.sum(jnp.square(ab[..., None, :].astype(jnp.float32) - centres), axis=-1)
  neg, idx = jax.lax.top_k(-d2, neighbours)
  w = jax.nn.softmax(neg / (2.0 * sigma**2), axis=-1)  # exp(-d^2 / 2 sigma^2), normalised.
  return jnp.sum(jax.nn.one_hot(idx, centres.shape[0], dtype=jnp.float32) * w[..., None], axis=-2)


def nearest_bin(ab: jax.Array, centres: jax.Array) -> jax.Array:
  """(...,) int32 index of the nearest bin centre of each ab value."""
  d2 = jnp.sum(jnp.square(ab[..., None, :].astype(jnp.float32) - centres), axis=-1)
  return jnp.argmin(d2, axis=-1).astype(jnp.int32)


def rebalancing_weights(counts: jax.Array, centres: jax.Array, mix: float = 0.5, sigma: float = 5.0) -> jax.Array:
  """Zhang et al.'s class-rebalancing weights from empirical bin counts.

  w = ((1 - mix) * p~ + mix / Q)^-1, scaled so that sum_q p~_q w_q = 1, where p~ is the
  empirical distribution smoothed by a Gaussian of `sigma` ab units over the bin centres.
  Rare (saturated) colours get weights above 1, so the loss does not settle on greyish ab.
  Without counts (all zero) the prior is uniform and every weight is 1.

  Args:
    counts: (Q,) pixel counts of each bin in the training data.
    centres: (Q, 2) bin centres.
    mix: lambda, the weight of the uniform distribution.
    sigma: smoothing width.

  Returns:
    (Q,) float32 weights.
  """
  q = centres.shape[0]
  total = jnp.sum(counts)
  prior = jnp.where(total > 0, counts / jnp.maximum(total, 1e-12), 1.0 / q)
  d2 = jnp.sum(jnp.square(centres[:, None] - centres[None]), axis=-1)
  kernel = jnp.exp(-d2 / (2.0 * sigma**2))
  smooth = kernel @ prior
  smooth = smooth / jnp.sum(smooth)
  w = 1.0 / ((1.0 - mix) * smooth + mix / q)
  return (w / jnp.sum(smooth * w)).astype(jnp.float32)


def annealed_mean(logits: jax.Array, centres: jax.Array, temperature: float = 0.38) -> jax.Array:
  """Zhang et al.'s point estimate of ab from a bin distribution: the mean of softmax(logits / T).

  T = 1 is the mean (desaturated), T -> 0 the mode (patchy); 0.38 is the paper's compromise.

  Args:
    logits: (..., Q) bin logits.
    centres: (Q, 2) bin centres.
    temperature: T.

  Returns:
    (..., 2) ab values.
  """
  return jax.nn.softmax(logits.astype(jnp.float32) / temperature, axis=-1) @ centres
