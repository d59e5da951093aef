"""sslax's native CPU convolution kernels (sslax/native) against XLA's convolution and its autodiff.

The kernel is C++ built on first use with the host's compiler; where none is found these tests
are skipped with the reason (and `model.conv_impl='auto'` takes the GEMM path, which
tests/test_conv.py covers), except the ones that check that fallback itself. Eight devices
against one: tests/test_conv.py, for both paths.
"""
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from sslax import native
from sslax.models import conv as conv_lib

_DN = ("NHWC", "HWIO", "NHWC")
needs_native = pytest.mark.skipif(native.load() is not None, reason=f"native kernel unavailable: {native.load()}")


def _value_and_grads(conv, x, w, strides, padding):
  """The output, and the gradients of a non-linear loss of it (so that the output gradient is not uniform)."""
  def loss(x, w):
    y = conv(x, w, strides, padding, dimension_numbers=_DN)
    return jnp.sum(jnp.tanh(y)), y
  (_, y), grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))(x, w)
  return (y, *grads)


# (batch, height, width, in, out, kernel, stride, padding). Cout is a multiple of 16 (the AVX-512
# vector); 48 takes the one-vector blocks, 16 and 32 the two-vector ones where they apply; an
# input of 5 channels leaves a remainder of rows in every register block.
_CASES = [
    (4, 8, 8, 3, 16, (3, 3), (1, 1), "SAME"),  # CIFAR stem
    (2, 16, 16, 3, 16, (7, 7), (2, 2), [(3, 3), (3, 3)]),  # ImageNet stem
    (4, 9, 7, 16, 32, (3, 3), (2, 2), "SAME"),  # strided, odd sizes, asymmetric SAME padding
    (3, 8, 8, 16, 32, (1, 1), (2, 2), "SAME"),  # 1x1 projection
    (3, 7, 7, 5, 48, (3, 3), (1, 1), "VALID"),
    (2, 10, 9, 16, 16, (3, 2), (2, 1), [(0, 2), (1, 0)]),  # non-square kernel, explicit pads
    (5, 2, 2, 32, 32, (3, 3), (1, 1), "SAME"),  # 2x2 map (im2col forward)
    (6, 4, 4, 16, 64, (3, 3), (1, 1), "SAME"),  # 4x4 map (XLA's gradients on the GEMM path)
    (2, 6, 6, 16, 16, (3, 3), (1, 1), [(3, 3), (2, 2)]),  # input gradient with negative padding
]


@needs_native
@pytest.mark.parametrize("case", _CASES, ids=lambda c: f"{c[1]}x{c[2]}x{c[3]}-{c[4]}-k{c[5]}-s{c[6]}-{c[7]}")
def test_native_gradients_match_xla(case):
  n, h, wd, cin, cout, kernel, strides, padding = case
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(n, h, wd, cin)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(*kernel, cin, cout)) / np.sqrt(np.prod(kernel) * cin), jnp.float32)
  lowered = jax.jit(jax.grad(lambda x, w: jnp.sum(jnp.tanh(conv_lib.native_conv_general_dilated(
      x, w, strides, padding, dimension_numbers=_DN))), argnums=(0, 1))).lower(x, w).as_text()
  assert native.CONV_WEIGHT_GRAD_TARGET in lowered  # The native kernel really computes dw,
  out_pixels = np.prod(lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=_DN).shape[1:3])
  # the forward pass where the kernel is larger than 1x1 and the map than 2x2, and then the input
  # gradient too where the convolution is unstrided and Cin a multiple of the vector width.
  forward = bool(np.prod(kernel) > 1 and out_pixels > 4)
  input_grad = forward and strides == (1, 1) and cin % native.vector_lanes() == 0
  assert lowered.count(native.CONV_FORWARD_TARGET) == int(forward) + int(input_grad)
  ref = _value_and_grads(lax.conv_general_dilated, x, w, strides, padding)
  new = _value_and_grads(conv_lib.native_conv_general_dilated, x, w, strides, padding)
  for name, a, b in zip(("output", "input grad", "weight grad"), ref, new):
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-5, err_msg=name)


@needs_native
def test_native_chunks_are_exact_and_bitwise_repeatable(monkeypatch):
  # One image per batch chunk (the smallest chunk) against the whole batch in one chunk: the same
  # sums in another grouping; and every call gives the same bits.
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.normal(size=(6, 8, 8, 16)), jnp.float32)
  g = jnp.asarray(rng.normal(size=(6, 8, 8, 32)), jnp.float32)
  pads = ((1, 1), (1, 1))
  monkeypatch.setattr(conv_lib, "_NATIVE_CHUNK_BYTES", 1)
  small = jax.jit(lambda x, g: conv_lib._native_weight_grad(x, g, (3, 3, 16, 32), (1, 1), pads))
  monkeypatch.setattr(conv_lib, "_NATIVE_CHUNK_BYTES", 1 << 30)
  whole = jax.jit(lambda x, g: conv_lib._native_weight_grad(x, g, (3, 3, 16, 32), (1, 1), pads))
  reference = jax.vjp(lambda w: lax.conv_general_dilated(x, w, (1, 1), pads, dimension_numbers=_DN,
                                                          precision=lax.Precision.HIGHEST),
                      jnp.zeros((3, 3, 16, 32)))[1](g)[0]
  for fn in (small, whole):
    np.testing.assert_allclose(np.asarray(fn(x, g)), np.asarray(reference), rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(np.asarray(small(x, g)), np.asarray(small(x, g)))
  # Threads own whole blocks of dw, so any thread count gives the same bits.
  monkeypatch.setattr(conv_lib, "_native_threads", lambda: 3)
  threaded = jax.jit(lambda x, g: conv_lib._native_weight_grad(x, g, (3, 3, 16, 32), (1, 1), pads))
  assert "threads = 3" in threaded.lower(x, g).as_text()
  np.testing.assert_array_equal(np.asarray(threaded(x, g)), np.asarray(whole(x, g)))


@needs_native
def test_native_forward_is_the_same_for_any_thread_count(monkeypatch):
  # Each image is one thread's. Rows of 7 pixels: one block of 7 (32 output channels) or blocks
  # of 4 and 3 (64); rows of 32: two blocks of 16. 3 x 3 x 48 = 144 products: two passes of
  # at most 128 per kernel row.
  rng = np.random.default_rng(3)
  for shape, cout in (((5, 7, 7, 16), 32), ((5, 7, 7, 48), 64), ((3, 32, 32, 16), 32)):
    x = jnp.asarray(rng.normal(size=shape), jnp.float32)
    w = jnp.asarray(rng.normal(size=(3, 3, shape[3], cout)), jnp.float32)
    pads = ((1, 1), (1, 1))
    results = []
    for threads in (1, 3):
      monkeypatch.setattr(conv_lib, "_native_threads", lambda threads=threads: threads)
      results.append(np.asarray(jax.jit(lambda x, w: conv_lib._native_forward(x, w, (1, 1), pads))(x, w)))
    np.testing.assert_array_equal(results[0], results[1])
    reference = lax.conv_general_dilated(x, w, (1, 1), pads, dimension_numbers=_DN, precision=lax.Precision.HIGHEST)
    np.testing.assert_allclose(results[0], np.asarray(reference), rtol=1e-5, atol=1e-5)


@needs_native
def test_uncovered_shapes_take_the_gemm_path():
  # A Cout that is not a multiple of the vector width, and bfloat16, keep the GEMM weight gradient.
  for cout, dtype in ((native.vector_lanes() + 2, jnp.float32), (32, jnp.bfloat16)):
    x, w = jnp.ones((2, 8, 8, 16), dtype), jnp.ones((3, 3, 16, cout), dtype)
    text = jax.jit(jax.grad(lambda w: jnp.sum(conv_lib.native_conv_general_dilated(
        x, w, (1, 1), "SAME", dimension_numbers=_DN).astype(jnp.float32)))).lower(w).as_text()
    assert native.CONV_WEIGHT_GRAD_TARGET not in text
    assert "dot_general" in text


@needs_native
def test_conv_impl_native_and_auto():
  assert conv_lib.conv_for("native") is conv_lib.native_conv_general_dilated
  assert conv_lib.conv_for("auto") is conv_lib.native_conv_general_dilated  # float32 on a CPU backend
  assert conv_lib.conv_for("auto", "bfloat16") is None


def test_without_a_compiler_auto_falls_back_and_native_is_a_clear_error(tmp_path):
  # A fresh process (the build is cached per process) with no compiler and an empty build cache.
  script = textwrap.dedent("""
      import pytest
      from sslax import native
      from sslax.models import conv
      reason = native.load()
      assert reason is not None and "no-such-compiler" in reason, reason
      assert conv.conv_for("auto") is conv.conv_general_dilated
      with pytest.raises(ValueError, match="(?s)conv_impl=.native.*no-such-compiler.*conv_impl=gemm"):
        conv.conv_for("native")
      print("ok")
      """)
  env = dict(os.environ, CXX="no-such-compiler", SSLAX_NATIVE_CACHE=str(tmp_path / "cache"),
             JAX_PLATFORMS="cpu")
  out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-3000:]
  assert not list((tmp_path / "cache").glob("*.so"))


def test_a_failing_build_reports_the_compiler_error(tmp_path, monkeypatch):
  # A compiler that exits with an error: build() raises with its message and leaves no file behind.
  fake = tmp_path / "fake-c++"
  fake.write_text("#!/bin/sh\necho 'conv_weight_grad.cc:1: error: something broke' >&2\nexit 3\n")
  fake.chmod(0o755)
  monkeypatch.setenv("CXX", str(fake))
  monkeypatch.setenv("SSLAX_NATIVE_CACHE", str(tmp_path / "cache"))
  with pytest.raises(native.NativeBuildError, match="(?s)exit code 3.*something broke"):
    native.build()
  assert list((tmp_path / "cache").iterdir()) == []
