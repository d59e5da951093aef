"""The GEMM-gradient convolution (sslax/models/conv.py) against XLA's own convolution.

Its forward pass is `lax.conv_general_dilated` itself (an im2col GEMM where the output map has
at most 2x2 pixels); its backward pass is hand-written (per batch chunk, GEMMs of the
transposed output gradient with each tap's window for the weights; one GEMM plus
interior-padding placement for strided input gradients), so the gradients are compared with
JAX's autodiff of `lax.conv_general_dilated` for every kind of convolution a backbone uses.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from sslax import native
from sslax.models import conv as conv_lib

_DN = ("NHWC", "HWIO", "NHWC")


@pytest.fixture(autouse=True)
def _always_gemm(monkeypatch):
  """Every shape takes the GEMM path here (the small test shapes would keep XLA's gradients)."""
  monkeypatch.setattr(conv_lib, "_XLA_MAX_OUTPUT_PIXELS_UNSTRIDED", 0)
  monkeypatch.setattr(conv_lib, "_XLA_MAX_INPUT_CHANNELS", 0)


def _grads(conv, x, w, strides, padding, g):
  y, vjp = jax.vjp(lambda x, w: conv(x, w, strides, padding, dimension_numbers=_DN), x, w)
  return (y, *vjp(g))


# (batch, height, width, in, out, kernel, stride, padding): ResNet's CIFAR and ImageNet stems,
# 3x3 convs with and without stride, 1x1 projections, odd sizes, asymmetric SAME padding
# (stride 2 on an even input), VALID, explicit asymmetric pads and a non-square kernel.
_CASES = [
    (4, 8, 8, 3, 5, (3, 3), (1, 1), "SAME"),
    (4, 9, 7, 6, 4, (3, 3), (2, 2), "SAME"),
    (2, 16, 16, 3, 8, (7, 7), (2, 2), [(3, 3), (3, 3)]),
    (3, 8, 8, 6, 10, (1, 1), (2, 2), "SAME"),
    (3, 7, 7, 4, 4, (3, 3), (1, 1), "VALID"),
    (2, 10, 9, 3, 5, (3, 2), (2, 1), [(0, 2), (1, 0)]),
    # Output maps of at most 2x2 pixels, whose forward pass is an im2col GEMM: the last stage
    # of a CIFAR-stem ResNet on 16-pixel inputs or 9-pixel tiles.
    (5, 2, 2, 6, 7, (3, 3), (1, 1), "SAME"),
    (5, 4, 4, 6, 8, (3, 3), (2, 2), "SAME"),
    (5, 3, 3, 6, 8, (3, 3), (2, 2), "SAME"),
    (5, 3, 3, 6, 8, (1, 1), (2, 2), "SAME"),
    (5, 2, 2, 6, 8, (3, 3), (2, 2), "SAME"),
    (3, 4, 3, 2, 4, (3, 2), (2, 1), "VALID"),
]


@pytest.mark.parametrize("case", _CASES, ids=lambda c: f"{c[1]}x{c[2]}x{c[3]}-k{c[5]}-s{c[6]}-{c[7]}")
def test_gradients_match_xla(case):
  n, h, wd, cin, cout, kernel, strides, padding = case
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(n, h, wd, cin)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(*kernel, cin, cout)), jnp.float32)
  y_ref = lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=_DN)
  g = jnp.asarray(rng.normal(size=y_ref.shape), jnp.float32)
  ref = jax.jit(lambda x, w, g: _grads(lax.conv_general_dilated, x, w, strides, padding, g))(x, w, g)
  new = jax.jit(lambda x, w, g: _grads(conv_lib.conv_general_dilated, x, w, strides, padding, g))(x, w, g)
  for name, a, b in zip(("output", "input grad", "weight grad"), ref, new):
    assert a.shape == b.shape, name
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-4, err_msg=name)


def test_weight_gradient_chunked_over_the_batch(monkeypatch):
  # Few rows per chunk: the weight gradient is accumulated by the scan over 4 batch chunks.
  monkeypatch.setattr(conv_lib, "_ROWS_PER_CHUNK", 2 * 8 * 8)
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.normal(size=(8, 8, 8, 4)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(3, 3, 4, 6)), jnp.float32)
  g = jnp.asarray(rng.normal(size=(8, 8, 8, 6)), jnp.float32)
  lowered = jax.jit(lambda x, w, g: _grads(conv_lib.conv_general_dilated, x, w, (1, 1), "SAME", g)).lower(x, w, g)
  assert "while" in lowered.as_text()  # The chunked path really ran.
  assert lowered.as_text().count("dot_general") == 9  # One product per tap, in the scan body.
  _, _, dw = lowered.compile()(x, w, g)
  _, _, dw_ref = _grads(lax.conv_general_dilated, x, w, (1, 1), "SAME", g)
  np.testing.assert_allclose(np.asarray(dw), np.asarray(dw_ref), rtol=1e-5, atol=1e-4)


def test_bfloat16_gradients_keep_dtypes():
  x = jnp.ones((2, 6, 6, 3), jnp.bfloat16)
  w = jnp.full((3, 3, 3, 4), 0.5, jnp.bfloat16)
  g = jnp.ones((2, 3, 3, 4), jnp.bfloat16)
  y, dx, dw = _grads(conv_lib.conv_general_dilated, x, w, (2, 2), "SAME", g)
  _, dx_ref, dw_ref = _grads(lax.conv_general_dilated, x, w, (2, 2), "SAME", g)
  assert (y.dtype, dx.dtype, dw.dtype) == (jnp.bfloat16,) * 3
  np.testing.assert_allclose(np.asarray(dx, np.float32), np.asarray(dx_ref, np.float32), rtol=1e-2)
  np.testing.assert_allclose(np.asarray(dw, np.float32), np.asarray(dw_ref, np.float32), rtol=1e-2)


def test_other_convolutions_fall_back_to_xla():
  # Dilation and feature groups are not rewritten: the same jaxpr as lax's.
  x, w = jnp.ones((1, 8, 8, 4)), jnp.ones((3, 3, 2, 4))
  for kwargs in ({"feature_group_count": 2}, {"rhs_dilation": (2, 2), "feature_group_count": 2}):
    ours = jax.make_jaxpr(lambda x, w: conv_lib.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=_DN,
                                                                     **kwargs))(x, w)
    theirs = jax.make_jaxpr(lambda x, w: lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=_DN,
                                                                  **kwargs))(x, w)
    assert str(ours) == str(theirs)
  assert "custom_vjp" in str(jax.make_jaxpr(
      lambda x, w: conv_lib.conv_general_dilated(x, jnp.ones((3, 3, 4, 4)), (1, 1), "SAME", dimension_numbers=_DN))(x, w))


@pytest.mark.parametrize("impl", ["gemm", "native"])
def test_eight_devices_equal_one_device(impl):
  # Inside shard_map the weights are replicated and the activations split: the weight
  # gradient must be the whole batch's, as with XLA's convolution.
  if impl == "native" and native.load() is not None:
    pytest.skip(f"native kernel unavailable: {native.load()}")
  conv = conv_lib.conv_for(impl)
  rng = np.random.default_rng(2)
  x = jnp.asarray(rng.normal(size=(16, 8, 8, 3)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(3, 3, 3, 16)), jnp.float32)

  def loss(w, x):
    y = conv(x, w, (2, 2), "SAME", dimension_numbers=_DN)
    return jnp.sum(jnp.tanh(y))

  def sharded_grad(num_devices):
    mesh = jax.make_mesh((num_devices,), ("data",), devices=jax.devices()[:num_devices])
    xs = jax.device_put(x, NamedSharding(mesh, P("data")))
    # The replicated weights' gradient comes out already summed over the devices
    # (autodiff transposes their implicit broadcast into a psum), as the train step relies on.
    fn = jax.jit(jax.shard_map(jax.grad(loss), mesh=mesh, in_specs=(P(), P("data")), out_specs=P()))
    assert (native.CONV_WEIGHT_GRAD_TARGET in fn.lower(w, xs).as_text()) == (impl == "native")
    return np.asarray(fn(w, xs))

  assert jax.device_count() == 8
  reference = np.asarray(jax.grad(lambda w: jnp.sum(jnp.tanh(lax.conv_general_dilated(
      x, w, (2, 2), "SAME", dimension_numbers=_DN))))(w))
  np.testing.assert_allclose(sharded_grad(1), reference, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(sharded_grad(8), sharded_grad(1), rtol=1e-5, atol=1e-5)


def test_shapes_where_xla_gradients_are_faster_keep_them(monkeypatch):
  monkeypatch.undo()  # The rule as shipped, not the autouse fixture's.
  same = ((1, 1), (1, 1))
  faster = conv_lib._xla_gradients_faster
  assert not faster((8, 32, 32, 16), (3, 3, 16, 16), (1, 1), same)  # 32x32 maps: GEMM
  assert not faster((8, 16, 16, 32), (3, 3, 32, 32), (1, 1), same)  # 16x16: GEMM
  assert not faster((8, 8, 8, 64), (3, 3, 64, 64), (1, 1), same)  # 8x8: GEMM
  assert not faster((8, 5, 5, 64), (3, 3, 64, 64), (1, 1), same)  # 5x5: GEMM
  assert faster((8, 4, 4, 128), (3, 3, 128, 128), (1, 1), same)  # 4x4 unstrided: XLA
  assert faster((8, 32, 32, 3), (3, 3, 3, 16), (1, 1), same)  # RGB stem: XLA
  assert not faster((8, 8, 8, 64), (3, 3, 64, 128), (2, 2), ((0, 1), (0, 1)))  # strided: GEMM
  assert not faster((8, 2, 2, 128), (3, 3, 128, 128), (1, 1), same)  # 2x2 maps: im2col
  x, w = jnp.ones((2, 4, 4, 4)), jnp.ones((3, 3, 4, 4))
  ours = jax.make_jaxpr(lambda x, w: conv_lib.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=_DN))(x, w)
  theirs = jax.make_jaxpr(lambda x, w: lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=_DN))(x, w)
  assert str(ours) == str(theirs)


def test_conv_impl_choice():
  # On a CPU: the native weight gradient where its kernel builds, else the GEMM one (test_native.py).
  on_cpu = conv_lib.native_conv_general_dilated if native.load() is None else conv_lib.conv_general_dilated
  assert conv_lib.conv_for("auto") is (on_cpu if jax.default_backend() == "cpu" else None)
  assert conv_lib.conv_for("gemm") is conv_lib.conv_general_dilated
  assert conv_lib.conv_for("xla") is None
  assert conv_lib.conv_for("auto", "bfloat16") is None  # XLA's own gradients in bfloat16.
  assert conv_lib.conv_for("gemm", "bfloat16") is conv_lib.conv_general_dilated
  with pytest.raises(ValueError, match="config.model.conv_impl"):
    conv_lib.conv_for("cudnn")
