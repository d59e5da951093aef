"""A 2-D convolution whose gradients run as matrix products, for XLA on CPUs.

XLA-CPU runs a forward NHWC convolution through its fast (Eigen) path, but the
convolutions that JAX's autodiff derives for the backward pass are slow there:
the weight gradient is a convolution whose "kernel" is the whole output map and
whose contraction runs over batch x height x width, and the input gradient of a
strided convolution dilates its input with zeros. On a ResNet-18 x0.25 at batch
512 (BENCHMARKS.md) the weight gradients of the 32x32 layers alone took 13x
their forward time.

`conv_general_dilated` below has the signature of `lax.conv_general_dilated` and
computes the same convolution forward, with a `custom_vjp` whose backward pass
is plain matrix products, which XLA-CPU runs near its peak:

  * weight gradient: per chunk of the batch, the output gradient transposed once to
    (Cout, rows) times, for each kernel tap (a, b), the (strided) window of the padded
    input that the tap sees, flattened to (rows, Cin): k*k GEMMs per chunk, summed over
    the chunks;
  * input gradient: XLA's own where the convolution is unstrided (a forward
    convolution with the flipped kernel, on XLA's fast path); for strided ones,
    one GEMM of the output gradient with all the taps' kernels
    (B*Ho*Wo, Cout) x (Cout, k*k*Cin), then each tap's slice is placed back at its
    (strided) input positions with `lax.pad` (interior padding = stride - 1) and
    the k*k placements are summed, which XLA fuses into one loop.

Both are exact rearrangements of the same sums (tested against
`lax.conv_general_dilated`'s own gradients). Where the output map has at most
2x2 pixels (the last stage of a CIFAR-stem ResNet on 16-pixel inputs or 9-pixel
jigsaw tiles), the forward pass is an im2col GEMM too, because XLA-CPU's own
convolution is 10-20x slower on such maps than on larger ones of the same work.
Unstrided convolutions with output maps of at most 4x4 pixels (but over 2x2) and
convolutions of RGB inputs keep XLA's own convolution and gradients (measured faster or
as fast there). Anything other than a 2-D NHWC/HWIO convolution without dilation or
feature groups falls back to `lax.conv_general_dilated` unchanged.

`native_conv_general_dilated` is the same function with sslax's C++ kernels (sslax/native,
built for the host CPU on first use and called through XLA's FFI) for the forward pass,
the weight gradient and the input gradient of unstrided convolutions: register-blocked
GEMMs over the padded input rows. On one core, per layer of a ResNet-18 x0.25 at batch 256,
the forward ran 1.04-1.9x faster than XLA-CPU's convolution and the weight gradient 1.2-2.4x
faster than the GEMM one (BENCHMARKS.md); the SimCLR step 1.5x faster. They cover float32
convolutions whose output channels are a multiple of the CPU's vector width (16 with
AVX-512, 8 with AVX2); other convolutions take the GEMM path.

`model.conv_impl` chooses: 'auto' (the default) uses the native kernels for float32 when
JAX's default backend is the CPU and they build (else the GEMM path, with a warning that
says why), and XLA's own gradients on GPUs and TPUs (cuDNN and the TPU compiler run them
well) and in bfloat16; 'native', 'gemm' or 'xla' force one.
"""
from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax import lax

from sslax import host, native

_NHWC = ("NHWC", "HWIO", "NHWC")
CONV_IMPLS = ("auto", "native", "gemm", "xla")


def conv_for(impl: str = "auto", dtype=jnp.float32):
  """The convolution primitive that `model.conv_impl` names.

  Args:
    impl: 'auto' (for float32 on a CPU backend the native kernels where they build, else
      the GEMM gradients; XLA's own gradients elsewhere), 'native', 'gemm' or 'xla'.
    dtype: the computation dtype (`model.dtype`). In bfloat16 on a CPU with AVX-512 BF16,
      XLA's own gradients took 0.66-0.70 s per SimCLR step against 1.00-1.04 s for the GEMM
      ones (BENCHMARKS.md), so 'auto' keeps XLA's for any dtype but float32.

  Returns:
    `native_conv_general_dilated` or `conv_general_dilated` below, or None for
    `lax.conv_general_dilated` (Flax's default).

  Raises:
    ValueError: an unknown `impl`, or 'native' where the kernel cannot be built.
  """
  if impl not in CONV_IMPLS:
    raise ValueError(f"Unknown config.model.conv_impl {impl!r}; valid choices: {', '.join(CONV_IMPLS)}.")
  if impl == "auto":
    if jax.default_backend() != "cpu" or jnp.dtype(dtype) != jnp.float32:
      return None
    reason = native.load()
    if reason is None:
      return native_conv_general_dilated
    logging.warning("config.model.conv_impl='auto' uses the GEMM gradients: the native kernels are "
                    "unavailable (%s).", reason)
    return conv_general_dilated
  if impl == "native":
    reason = native.load()
    if reason is not None:
      raise ValueError(f"config.model.conv_impl='native' needs sslax's native CPU kernels, which are unavailable "
                       f"here: {reason}. Install a C++ compiler (e.g. `apt-get install g++`) or set "
                       f"--config.model.conv_impl=gemm (or auto).")
    return native_conv_general_dilated
  return conv_general_dilated if impl == "gemm" else None


def _is_nhwc(lhs_ndim: int, dimension_numbers) -> bool:
  """Whether `dimension_numbers` describe a 2-D NHWC x HWIO -> NHWC convolution."""
  if lhs_ndim != 4 or dimension_numbers is None:
    return False
  shape = (1, 1, 1, 1)
  try:
    given = lax.conv_dimension_numbers(shape, shape, dimension_numbers)
  except (TypeError, ValueError):
    return False
  return given == lax.conv_dimension_numbers(shape, shape, _NHWC)


def conv_general_dilated(lhs, rhs, window_strides: Sequence[int], padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count: int = 1, batch_group_count: int = 1,
                         precision=None, preferred_element_type=None, impl: str = "gemm"):
  """`lax.conv_general_dilated` with GEMM gradients for 2-D NHWC convolutions (module docstring).

  Args:
    lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
    feature_group_count, batch_group_count, precision, preferred_element_type: as
      `lax.conv_general_dilated`.
    impl: 'gemm' (XLA's convolution forward, GEMM gradients) or 'native' (sslax's C++
      kernels, `sslax/native`, which `native.load()` must have registered; convolutions
      they do not cover, a Cout that is not a multiple of the vector width or a dtype
      other than float32, take the 'gemm' path).

  Returns:
    The convolution, equal to `lax.conv_general_dilated`'s up to float rounding.
  """
  plain = (_is_nhwc(lhs.ndim, dimension_numbers) and feature_group_count == 1 and batch_group_count == 1
           and all(d == 1 for d in (lhs_dilation or (1, 1))) and all(d == 1 for d in (rhs_dilation or (1, 1)))
           and preferred_element_type is None)
  if not plain:
    return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
                                    feature_group_count, batch_group_count, precision, preferred_element_type)
  if isinstance(padding, str):
    padding = lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], window_strides, padding)
  strides = tuple(int(s) for s in window_strides)
  pads = tuple((int(lo), int(hi)) for lo, hi in padding)
  if impl == "native" and not _native_covers(lhs, rhs):
    impl = "gemm"
  # The native kernels beat XLA's gradients on the shapes where the GEMM ones do not (an RGB
  # stem 11x, 4x4 maps 1.2x; BENCHMARKS.md), so only the GEMM path keeps XLA's there.
  if impl == "gemm" and _xla_gradients_faster(lhs.shape, rhs.shape, strides, pads):
    return lax.conv_general_dilated(lhs, rhs, strides, pads, dimension_numbers=_NHWC, precision=precision)
  lhs, rhs = same_varying_axes(lhs, rhs)
  return _conv(lhs, rhs, strides, pads, precision, impl)


# `model.conv_impl='native'`: the same convolution computed by sslax/native's kernels.
native_conv_general_dilated = functools.partial(conv_general_dilated, impl="native")


def _native_covers(lhs, rhs) -> bool:
  """Whether the native kernels compute this convolution's weight gradient (float32, Cout % lanes)."""
  lanes = native.vector_lanes()
  return (lanes > 0 and lhs.dtype == jnp.float32 and rhs.dtype == jnp.float32 and rhs.shape[3] % lanes == 0)


def _varying_axes(x) -> frozenset:
  """The shard_map axes `x` varies over (`manual_axis_type.varying`; `vma` in older JAX)."""
  aval = jax.typeof(x)
  manual = getattr(aval, "manual_axis_type", None)
  return frozenset(manual.varying if manual is not None else getattr(aval, "vma", ()))


def same_varying_axes(*xs):
  """Marks each array as varying over every shard_map axis that any of them varies over.

  Under `jax.shard_map` the weights are replicated while the activations vary over the
  data axis; a custom_vjp's backward pass must return each cotangent with its input's
  type, and the weight gradient computed from the activations varies. Casting the weights
  to varying first (a no-op on the values) makes autodiff sum that gradient over the
  devices outside the custom_vjp, exactly as it does for `lax.conv_general_dilated`.
  """
  axes = frozenset().union(*(_varying_axes(x) for x in xs))
  out = []
  for x in xs:
    missing = tuple(sorted(axes - _varying_axes(x)))
    out.append(lax.pcast(x, missing, to="varying") if missing else x)
  return out


# Output maps of at most this many pixels are computed as one im2col GEMM: there XLA-CPU's
# own convolution is 10-20x slower than on a 4x4 map of the same work (a 3x3 conv on
# 640 x 2x2 x 128 took 108 ms against 9 ms for the GEMM; BENCHMARKS.md), and it is the last
# stage of a CIFAR-stem ResNet on 16-pixel inputs and 9-pixel jigsaw tiles. On larger maps
# XLA's convolution wins (by up to 12x), so it stays.
_IM2COL_MAX_OUTPUT_PIXELS = 4
# Unstrided convolutions whose output map has at most this many pixels, or whose input has at
# most _XLA_MAX_INPUT_CHANNELS channels (an RGB stem), keep XLA's own gradients: timed alone on
# a 1-core XLA device at batch 256, its weight gradient tied the GEMM one on 4x4 and 3x3 maps
# and lost on 5x5 and larger; on the stem the GEMM one was faster alone but the SimCLR step
# was 10% slower with it (BENCHMARKS.md, issue 13).
_XLA_MAX_OUTPUT_PIXELS_UNSTRIDED = 16
_XLA_MAX_INPUT_CHANNELS = 4


def _xla_gradients_faster(x_shape, w_shape, strides, pads) -> bool:
  """Whether XLA's own convolution and gradients beat the GEMM ones on this shape (measured)."""
  ho, wo = _output_hw(x_shape[1:3], w_shape[:2], strides, pads)
  if ho * wo <= _IM2COL_MAX_OUTPUT_PIXELS:
    return False  # XLA's forward convolution is pathologically slow on such maps.
  if w_shape[2] <= _XLA_MAX_INPUT_CHANNELS:
    return True
  return strides == (1, 1) and ho * wo <= _XLA_MAX_OUTPUT_PIXELS_UNSTRIDED


def _output_hw(x_hw, kernel_hw, strides, pads):
  return tuple((size + lo + hi - k) // s + 1 for size, k, s, (lo, hi) in zip(x_hw, kernel_hw, strides, pads))


def _forward_xla(x, w, strides, pads, precision):
  """XLA's convolution, or an im2col GEMM on the tiny output maps where XLA's is slow."""
  ho, wo = _output_hw(x.shape[1:3], w.shape[:2], strides, pads)
  if ho * wo > _IM2COL_MAX_OUTPUT_PIXELS:
    return lax.conv_general_dilated(x, w, strides, pads, dimension_numbers=_NHWC, precision=precision)
  kh, kw, cin, cout = w.shape
  xp = _pad_spatial(x, pads)
  cols = jnp.concatenate([_tap_window(xp, a, b, (ho, wo), strides) for a in range(kh) for b in range(kw)], axis=-1)
  out = jnp.dot(cols.reshape(-1, kh * kw * cin), w.reshape(kh * kw * cin, cout), precision=precision)
  return out.reshape(x.shape[0], ho, wo, cout)


# The native forward kernel reads its whole kernel once per image; where the kernel is larger than
# the L2 cache and the map small, that traffic sets its speed. Timed alone on one core at batch 256
# (BENCHMARKS.md): it beat XLA's convolution on every 3x3 layer of a ResNet-18 x0.25 (kernels up to
# 576 KiB) and on x1.0's 16x16 and 32x32 maps, tied on 8x8x256 (2.3 MiB) and lost on 4x4 output maps
# with 4.5-9 MiB kernels (134 against 87 ms, 278 against 161 ms).
_NATIVE_FORWARD_MAX_KERNEL_BYTES = 1 << 20
_NATIVE_FORWARD_MIN_PIXELS_LARGE_KERNEL = 64


def _native_forward_covers(x, w, strides, pads) -> bool:
  """Whether the native kernel runs this forward convolution.

  float32, Cout a multiple of the vector width, a kernel larger than 1x1 (on a 1x1 projection
  XLA's convolution was faster: 1.55 against 1.94 ms at 32x32x16 -> 32, stride 2), output maps
  larger than 2x2 (those are im2col GEMMs), and a kernel of at most 1 MiB or a map of at least
  8x8 pixels (above).
  """
  ho, wo = _output_hw(x.shape[1:3], w.shape[:2], strides, pads)
  kernel_bytes = 4 * int(np.prod(w.shape))
  return (_native_covers(x, w) and w.shape[0] * w.shape[1] > 1 and ho * wo > _IM2COL_MAX_OUTPUT_PIXELS
          and (kernel_bytes <= _NATIVE_FORWARD_MAX_KERNEL_BYTES or ho * wo >= _NATIVE_FORWARD_MIN_PIXELS_LARGE_KERNEL))


def _native_call(target: str, out_shape, a, b, strides, pads, **attributes):
  """Calls a kernel of sslax/native/conv.cc on (a, b) with the convolution's strides and top/left pads."""
  out = jax.ffi.ffi_call(target, jax.ShapeDtypeStruct(out_shape, jnp.float32), vmap_method="sequential")(
      a, b, sh=np.int64(strides[0]), sw=np.int64(strides[1]), pt=np.int64(pads[0][0]), pl=np.int64(pads[1][0]),
      threads=np.int64(_native_threads()), **{k: np.int64(v) for k, v in attributes.items()})
  # An FFI call's result carries no shard_map type; it is this device's own result (for dw its
  # partial sum), so it varies over the axes its inputs vary over.
  return same_varying_axes(out, a, b)[0]


def _native_forward(x, w, strides, pads):
  """The convolution from sslax's C++ kernel (sslax/native/conv.cc): each image on one thread."""
  ho, wo = _output_hw(x.shape[1:3], w.shape[:2], strides, pads)
  return _native_call(native.CONV_FORWARD_TARGET, (x.shape[0], ho, wo, w.shape[3]), x, w, strides, pads)


def _forward(x, w, strides, pads, precision, impl):
  if impl == "native" and _native_forward_covers(x, w, strides, pads):
    return _native_forward(x, w, strides, pads)
  return _forward_xla(x, w, strides, pads, precision)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5))
def _conv(x, w, strides, pads, precision, impl):
  return _forward(x, w, strides, pads, precision, impl)


def _conv_fwd(x, w, strides, pads, precision, impl):
  return _forward(x, w, strides, pads, precision, impl), (x, w)


def _tap_window(xp, a: int, b: int, out_hw, strides):
  """The (strided) window of the padded input that kernel tap (a, b) multiplies."""
  (ho, wo), (sh, sw) = out_hw, strides
  return lax.slice(xp, (0, a, b, 0), (xp.shape[0], a + (ho - 1) * sh + 1, b + (wo - 1) * sw + 1, xp.shape[3]),
                   (1, sh, sw, 1))


# Rows (batch x output pixels) per chunk of the weight gradient, at least two images: the
# chunk's transposed output gradient and its tap windows then stay in the core's L2 cache.
# On a 1-core XLA device, 1024-row chunks beat 2048-16384 on every layer of a ResNet-18
# x0.25 at batch 256 except the 32x32 ones, where 2 images (2048 rows) won (BENCHMARKS.md).
_ROWS_PER_CHUNK = 1024


def _pad_spatial(x, pads):
  return lax.pad(x, jnp.zeros((), x.dtype), ((0, 0, 0), (pads[0][0], pads[0][1], 0), (pads[1][0], pads[1][1], 0),
                                           (0, 0, 0)))


def _weight_grad(x, g, kernel_hw, strides, pads, precision):
  """dL/dw as GEMMs per batch chunk, accumulated over chunks by a scan.

  Each chunk's output gradient is transposed once to (Cout, rows) and multiplied by each tap's
  window of the padded input, (rows, Cin), as it lies: a GEMM whose left operand is row-major
  along its contraction, which XLA-CPU runs at 2-3x the speed of the same product with a
  transposed window on the left (`dot_general` contracting dimension 0 of both). The barrier
  keeps XLA from folding the transpose back into the product. Each chunk is padded and cut
  into its windows inside the scan body, so those copies stay in the cache.
  """
  (kh, kw), (n, ho, wo, cout), cin = kernel_hw, g.shape, x.shape[3]
  rows = max(_ROWS_PER_CHUNK, 2 * ho * wo)
  chunks = max(1, min(n, (n * ho * wo) // rows))
  while n % chunks:
    chunks -= 1

  def chunk_grad(xc, gc):
    xp = _pad_spatial(xc, pads)
    g_t = lax.optimization_barrier(gc.reshape(-1, cout).T)  # (Cout, rows), materialised.
    return jnp.concatenate([jnp.dot(g_t, _tap_window(xp, a, b, (ho, wo), strides).reshape(-1, cin),
                                    precision=precision) for a in range(kh) for b in range(kw)],
                           axis=-1)  # (Cout, kh*kw*Cin), taps major as in the kernel.

  if chunks == 1:
    acc = chunk_grad(x, g)
  else:
    xs = (x.reshape(chunks, n // chunks, *x.shape[1:]), g.reshape(chunks, n // chunks, ho, wo, cout))
    acc = jnp.zeros((cout, kh * kw * cin), jnp.promote_types(x.dtype, g.dtype))
    acc = same_varying_axes(acc, x, g)[0]  # The carry varies over shard_map axes as the chunks do.
    acc, _ = lax.scan(lambda acc, c: (acc + chunk_grad(*c), None), acc, xs)
  return acc.T.reshape(kh, kw, cin, cout)


# Bytes of padded input plus output gradient per batch chunk of the native weight gradient:
# on a 1-core device at batch 256, 256-512 KiB chunks beat 1 MiB by 0-10% and 2 MiB by up to
# 25% on every layer of a ResNet-18 x0.25 (the chunk and its block of dw stay in L2).
_NATIVE_CHUNK_BYTES = 256 * 1024


def _native_threads() -> int:
  """Threads for one native call: this process's cores per local XLA device (1 with one device per core)."""
  return max(1, host.available_cores() // jax.local_device_count("cpu"))


def _native_weight_grad(x, g, w_shape, strides, pads):
  """dL/dw from sslax's C++ kernel (sslax/native/conv.cc), float32 throughout.

  The result is bitwise the same for any thread count (each thread owns whole blocks of dw).
  """
  return _native_call(native.CONV_WEIGHT_GRAD_TARGET, w_shape, x, g, strides, pads, chunk_bytes=_NATIVE_CHUNK_BYTES)


def _input_grad_strided(g, w, padded_hw, strides, pads, precision):
  """dL/dx of a strided conv: one GEMM for all taps, placed back by interior padding and summed."""
  kh, kw, cin, cout = w.shape
  n, ho, wo, _ = g.shape
  (hp, wp), zero = padded_hw, jnp.zeros((), g.dtype)
  contrib = jnp.dot(g.reshape(-1, cout), w.reshape(kh * kw * cin, cout).T, precision=precision)
  contrib = contrib.reshape(n, ho, wo, kh * kw, cin)
  dxp = None
  for a in range(kh):
    for b in range(kw):
      placed = lax.pad(contrib[:, :, :, a * kw + b], zero,
                       ((0, 0, 0), (a, hp - a - (ho - 1) * strides[0] - 1, strides[0] - 1),
                        (b, wp - b - (wo - 1) * strides[1] - 1, strides[1] - 1), (0, 0, 0)))
      dxp = placed if dxp is None else dxp + placed
  return _pad_spatial(dxp, tuple((-lo, -hi) for lo, hi in pads))  # Negative padding crops the padding off.


def _conv_bwd(strides, pads, precision, impl, residuals, g):
  x, w = residuals
  if impl == "native":
    dw = _native_weight_grad(x, g.astype(jnp.float32), w.shape, strides, pads)
  else:
    dw = _weight_grad(x, g, w.shape[:2], strides, pads, precision).astype(w.dtype)
  if strides == (1, 1):
    # Unstrided: the input gradient is a forward convolution of g with the kernel flipped and
    # its channel axes swapped, padded by (k - 1 - pad) on each side; the native kernel or XLA's
    # (autodiff of XLA's convolution derives that same forward convolution) computes it.
    kh, kw = w.shape[:2]
    w_t = jnp.flip(w, (0, 1)).transpose(0, 1, 3, 2)
    pads_t = tuple((k - 1 - lo, k - 1 - hi) for k, (lo, hi) in zip((kh, kw), pads))
    if impl == "native" and _native_forward_covers(g, w_t, strides, pads_t):
      dx = _native_forward(g, w_t, strides, pads_t)
    else:
      dx = jax.vjp(lambda x: _forward_xla(x, w, strides, pads, precision), x)[1](g)[0]
  else:
    padded_hw = (x.shape[1] + sum(pads[0]), x.shape[2] + sum(pads[1]))
    dx = _input_grad_strided(g, w, padded_hw, strides, pads, precision)
  return dx.astype(x.dtype), dw


_conv.defvjp(_conv_fwd, _conv_bwd)
