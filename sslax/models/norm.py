"""BatchNorm with a hand-written backward pass, for XLA on CPUs.

XLA-CPU runs the backward pass that JAX's autodiff derives from `flax.linen.BatchNorm`
in several passes over the activations (the cotangents of the mean, of the mean of
squares and of the normalised input each become their own reductions and element-wise
loops). `BatchNorm` below keeps Flax's variables, names and arithmetic in the forward
pass, and its `custom_vjp` computes the input gradient in two passes, the fewest the
formula allows:

  dbias  = sum(dy),   dscale = rstd * (sum(dy * x) - mean * sum(dy))
  dx     = scale * rstd * (dy - dbias / M - xhat * dscale / M)
         = a * dy + c1 * x + c0   (per-channel a, c1, c0),

one multi-output reduction for the two sums and one element-wise loop for dx. Timed
alone with the ReLU after it (`benchmarks/batchnorm_speed.py`), it was 2.6-3.5x faster than
Flax's on the 32x32 and 16x16 maps of a ResNet-18 x0.25; in the whole SimCLR step, 5-9%
(BENCHMARKS.md, "BatchNorm with a two-pass backward").

With `axis_name` (global BN inside `shard_map`) the forward sums and the backward's two
sums are summed over the devices, as Flax's `pmean` of the statistics and its autodiff
do; the scale and bias gradients are each device's own share, which autodiff sums over
the devices outside, as for `flax.linen.BatchNorm`. `model.bn_impl` chooses it: 'auto'
(the default) on a CPU backend, Flax's BatchNorm on GPUs and TPUs; 'fused' or 'flax'
force one. Both hold the same variables, so checkpoints and exported backbones do not
depend on the choice.
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import flax.linen as nn
from flax.linen import dtypes as flax_dtypes
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from sslax.models.conv import same_varying_axes

BN_IMPLS = ("auto", "fused", "flax")


def batch_norm_for(impl: str = "auto") -> Callable[..., nn.Module]:
  """The BatchNorm module class that `model.bn_impl` names.

  Args:
    impl: 'auto' (`BatchNorm` below on a CPU backend, Flax's elsewhere), 'fused' or 'flax'.

  Returns:
    `BatchNorm` or `flax.linen.BatchNorm`; both take the keyword arguments the backbones use.
  """
  if impl not in BN_IMPLS:
    raise ValueError(f"Unknown config.model.bn_impl {impl!r}; valid choices: {', '.join(BN_IMPLS)}.")
  if impl == "auto":
    impl = "fused" if jax.default_backend() == "cpu" else "flax"
  return BatchNorm if impl == "fused" else nn.BatchNorm


def _sum_over(values, axes, axis_name):
  """Per-channel sums of each array in `values` over `axes`, and over `axis_name`'s devices if set."""
  sums = jnp.stack([jnp.sum(v, axes) for v in values])
  return lax.psum(sums, axis_name) if axis_name is not None else sums


def _count(x, axes, axis_name) -> int:
  """How many values each channel's statistics average over (all devices of `axis_name`)."""
  local = int(np.prod([x.shape[a] for a in axes]))
  return local * (lax.axis_size(axis_name) if axis_name is not None else 1)


def _statistics(x, axes, axis_name):
  """Flax's fast variance: mean and E[x^2] - mean^2 (clipped at 0), in float32."""
  x = x.astype(jnp.float32)
  total_x, total_xx = _sum_over((x, x * x), axes, axis_name)
  count = _count(x, axes, axis_name)
  mean = total_x / count
  return mean, jnp.maximum(0.0, total_xx / count - mean * mean)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _normalize(x, scale, bias, epsilon, axis_name):
  return _normalize_fwd(x, scale, bias, epsilon, axis_name)[0]


def _normalize_fwd(x, scale, bias, epsilon, axis_name):
  axes = tuple(range(x.ndim - 1))
  mean, var = _statistics(x, axes, axis_name)
  rstd = lax.rsqrt(var + epsilon)
  mul = rstd * scale
  y = (x.astype(jnp.float32) - mean) * mul + bias  # Flax's order of operations.
  return (y, mean, var), (x, mean, rstd, scale)


def _normalize_bwd(epsilon, axis_name, residuals, cotangents):
  del epsilon
  # The statistics are outputs for the running averages only; nothing differentiates them.
  dy = cotangents[0]
  x, mean, rstd, scale = residuals
  axes = tuple(range(x.ndim - 1))
  xf = x.astype(jnp.float32)
  local = _sum_over((dy, dy * xf), axes, None)
  local_dy, local_dyx = local
  total_dy, total_dyx = lax.psum(local, axis_name) if axis_name is not None else local
  count = _count(x, axes, axis_name)
  a = scale * rstd
  # dx = a * (dy - mean(dy) - xhat * mean(dy * xhat)), xhat = (x - mean) * rstd, as c1 * x + c0 + a * dy.
  c1 = -a * rstd * rstd * (total_dyx - mean * total_dy) / count
  c0 = -a * total_dy / count - c1 * mean
  dx = dy * a + xf * c1 + c0
  # This device's shares of the parameter gradients; autodiff sums them over the devices.
  dscale = rstd * (local_dyx - mean * local_dy)
  return dx.astype(x.dtype), dscale.astype(scale.dtype), local_dy.astype(scale.dtype)


_normalize.defvjp(_normalize_fwd, _normalize_bwd)


class BatchNorm(nn.Module):
  """`flax.linen.BatchNorm` over the last axis, with the two-pass backward above.

  Same variables ('scale', 'bias' params; 'mean', 'var' batch_stats), initialisers,
  running-average update and forward arithmetic as Flax's module, for the arguments
  the backbones use.

  Attributes:
    use_running_average: normalise with the running statistics (evaluation).
    axis_name: mesh axis over which batch statistics are summed (None: this device's).
    momentum: running-average momentum.
    epsilon: added to the variance.
    dtype: the output dtype (None: that of the input and params).
    param_dtype: dtype of scale and bias.
    scale_init, bias_init: initialisers.
  """
  use_running_average: bool | None = None
  axis_name: str | None = None
  momentum: float = 0.99
  epsilon: float = 1e-5
  dtype: Any = None
  param_dtype: Any = jnp.float32
  scale_init: Callable[..., Any] = nn.initializers.ones
  bias_init: Callable[..., Any] = nn.initializers.zeros

  @nn.compact
  def __call__(self, x, use_running_average: bool | None = None):
    """Args:
      x: (..., C) activations; statistics are per channel over all other axes.
      use_running_average: overrides the attribute.

    Returns:
      The normalised, scaled and shifted activations, (..., C).
    """
    use_running_average = nn.merge_param("use_running_average", self.use_running_average, use_running_average)
    features = (x.shape[-1],)
    ra_mean = self.variable("batch_stats", "mean", lambda s: jnp.zeros(s, jnp.float32), features)
    ra_var = self.variable("batch_stats", "var", lambda s: jnp.ones(s, jnp.float32), features)
    scale = self.param("scale", self.scale_init, features, self.param_dtype)
    bias = self.param("bias", self.bias_init, features, self.param_dtype)
    out_dtype = flax_dtypes.canonicalize_dtype(x, scale, bias, dtype=self.dtype)
    if use_running_average:
      y = (x.astype(jnp.float32) - ra_mean.value) * (lax.rsqrt(ra_var.value + self.epsilon) * scale) + bias
      return y.astype(out_dtype)
    axis_name = None if self.is_initializing() else self.axis_name
    x, scale, bias = same_varying_axes(x, scale, bias)
    y, mean, var = _normalize(x, scale, bias, self.epsilon, axis_name)
    if not self.is_initializing():
      ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * lax.stop_gradient(mean)
      ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * lax.stop_gradient(var)
    return y.astype(out_dtype)
