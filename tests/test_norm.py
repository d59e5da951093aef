"""The two-pass BatchNorm (sslax/models/norm.py) against `flax.linen.BatchNorm`.

Its forward pass is Flax's arithmetic and its backward pass is hand-written, so outputs,
running statistics and the gradients of input, scale and bias are compared with Flax's
module under JAX's autodiff: on one device, with global statistics inside `shard_map` on
8 devices against 1, in bfloat16, and as the backbone's BatchNorm in a whole ResNet.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from sslax.models import build_backbone
from sslax.models import norm as norm_lib


def _variables(scale, bias):
  c = scale.shape[0]
  return {"params": {"scale": scale, "bias": bias},
          "batch_stats": {"mean": jnp.linspace(-1.0, 1.0, c), "var": jnp.linspace(0.5, 2.0, c)}}


def _inputs(shape, seed=0):
  rng = np.random.default_rng(seed)
  x = jnp.asarray(rng.normal(size=shape) * 2.0 + 0.5, jnp.float32)
  scale = jnp.asarray(rng.uniform(0.5, 1.5, shape[-1]), jnp.float32)
  bias = jnp.asarray(rng.normal(size=shape[-1]), jnp.float32)
  cotangent = jnp.asarray(rng.normal(size=shape), jnp.float32)
  return x, scale, bias, cotangent


def _apply_and_grads(module, x, scale, bias, cotangent, **apply_kwargs):
  """Output, new running statistics, and d(sum(relu(out) * cotangent))/d(x, scale, bias)."""
  def loss(x, scale, bias):
    y, updates = module.apply(_variables(scale, bias), x, mutable=["batch_stats"], **apply_kwargs)
    return jnp.sum(nn.relu(y) * cotangent), (y, updates["batch_stats"])

  (_, (y, stats)), grads = jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)(x, scale, bias)
  return y, stats, grads


@pytest.mark.parametrize("shape", [(8, 6, 6, 5), (32, 7)], ids=["nhwc", "dense"])
def test_matches_flax(shape):
  x, scale, bias, cotangent = _inputs(shape)
  kwargs = dict(use_running_average=False, momentum=0.9, epsilon=1e-5)
  y, stats, grads = _apply_and_grads(norm_lib.BatchNorm(**kwargs), x, scale, bias, cotangent)
  ry, rstats, rgrads = _apply_and_grads(nn.BatchNorm(**kwargs), x, scale, bias, cotangent)
  np.testing.assert_allclose(y, ry, rtol=1e-5, atol=1e-5)
  for key in ("mean", "var"):
    np.testing.assert_allclose(stats[key], rstats[key], rtol=1e-6, atol=1e-6)
  for got, want, name in zip(grads, rgrads, ("x", "scale", "bias")):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5, err_msg=name)


def test_running_average_mode_matches_flax():
  x, scale, bias, _ = _inputs((4, 3, 3, 6))
  got = norm_lib.BatchNorm(use_running_average=True).apply(_variables(scale, bias), x)
  want = nn.BatchNorm(use_running_average=True).apply(_variables(scale, bias), x)
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_same_variables_as_flax():
  x = jnp.ones((2, 4, 4, 3))
  ours = jax.tree.map(jnp.shape, norm_lib.BatchNorm(use_running_average=False).init(jax.random.PRNGKey(0), x))
  flax = jax.tree.map(jnp.shape, nn.BatchNorm(use_running_average=False).init(jax.random.PRNGKey(0), x))
  assert ours == flax


def test_bfloat16_keeps_dtypes():
  x, scale, bias, cotangent = _inputs((8, 4, 4, 3))
  module = norm_lib.BatchNorm(use_running_average=False, dtype=jnp.bfloat16)
  y, _, grads = _apply_and_grads(module, x.astype(jnp.bfloat16), scale, bias, cotangent)
  ry, _, rgrads = _apply_and_grads(nn.BatchNorm(use_running_average=False, dtype=jnp.bfloat16),
                                   x.astype(jnp.bfloat16), scale, bias, cotangent)
  assert y.dtype == jnp.bfloat16 and grads[0].dtype == jnp.bfloat16 and grads[1].dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(y, np.float32), np.asarray(ry, np.float32), rtol=2e-2, atol=2e-2)
  np.testing.assert_allclose(grads[1], rgrads[1], rtol=2e-2, atol=2e-2)


def test_global_statistics_on_eight_devices_equal_one_device():
  # Statistics over the whole batch (axis_name inside shard_map): outputs, running statistics
  # and the replicated scale and bias's gradients (summed over the devices by autodiff) must
  # be those of one device holding the whole batch, and Flax's.
  x, scale, bias, cotangent = _inputs((16, 4, 4, 3), seed=1)

  def run(module_cls, num_devices):
    mesh = jax.make_mesh((num_devices,), ("data",), devices=jax.devices()[:num_devices])
    module = module_cls(use_running_average=False, momentum=0.9, axis_name="data")

    def shard(x, scale, bias, cotangent):
      return _apply_and_grads(module, x, scale, bias, cotangent)

    fn = jax.shard_map(shard, mesh=mesh, in_specs=(P("data"), P(), P(), P("data")),
                       out_specs=(P("data"), P(), (P("data"), P(), P())))
    put = lambda a: jax.device_put(a, NamedSharding(mesh, P("data")))  # noqa: E731
    return jax.tree.map(np.asarray, jax.jit(fn)(put(x), scale, bias, put(cotangent)))

  assert jax.device_count() == 8
  one, eight, flax_eight = run(norm_lib.BatchNorm, 1), run(norm_lib.BatchNorm, 8), run(nn.BatchNorm, 8)
  for got, want in ((eight, one), (eight, flax_eight)):
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), got, want)


def test_resnet_with_either_batchnorm():
  # The whole backbone: same parameter tree, same features and gradients within float32 noise.
  cfg = ml_collections.ConfigDict({"backbone": "resnet18", "stem": "cifar", "width_multiplier": 0.125,
                                   "dtype": "float32", "conv_impl": "xla"})
  images = jax.random.normal(jax.random.PRNGKey(1), (4, 16, 16, 3))

  def features_and_grads(bn_impl):
    cfg.bn_impl = bn_impl
    model = build_backbone(cfg)
    variables = model.init(jax.random.PRNGKey(0), images, train=False)

    def loss(params):
      out, _ = model.apply({"params": params, "batch_stats": variables["batch_stats"]}, images, train=True,
                           mutable=["batch_stats"])
      return jnp.sum(jnp.sin(out)), out

    (_, out), grads = jax.value_and_grad(loss, has_aux=True)(variables["params"])
    return out, grads

  out, grads = features_and_grads("fused")
  ref_out, ref_grads = features_and_grads("flax")
  assert jax.tree.structure(grads) == jax.tree.structure(ref_grads)
  np.testing.assert_allclose(out, ref_out, rtol=1e-4, atol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4), grads, ref_grads)


def test_bn_impl_choice():
  assert norm_lib.batch_norm_for("auto") is (norm_lib.BatchNorm if jax.default_backend() == "cpu" else nn.BatchNorm)
  assert norm_lib.batch_norm_for("fused") is norm_lib.BatchNorm
  assert norm_lib.batch_norm_for("flax") is nn.BatchNorm
  with pytest.raises(ValueError, match="config.model.bn_impl"):
    norm_lib.batch_norm_for("cudnn")
