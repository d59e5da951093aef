"""Barlow Twins and VICReg: losses against NumPy references, global-batch statistics across devices."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from reference import numerical_grad
from sslax import losses, parallel


def numpy_barlow_twins(z1, z2, lambd, eps=1e-5):
  a = (z1 - z1.mean(0)) / np.sqrt(z1.var(0) + eps)
  b = (z2 - z2.mean(0)) / np.sqrt(z2.var(0) + eps)
  c = a.T @ b / z1.shape[0]
  on = sum((1 - c[i, i]) ** 2 for i in range(c.shape[0]))
  off = sum(c[i, j] ** 2 for i in range(c.shape[0]) for j in range(c.shape[1]) if i != j)
  return on + lambd * off


def numpy_vicreg(z1, z2, sim=25.0, var=25.0, cov=1.0, eps=1e-4):
  n, d = z1.shape
  inv = np.mean((z1 - z2) ** 2)

  def terms(z):
    zc = z - z.mean(0)
    c = zc.T @ zc / (n - 1)
    std = np.sqrt(np.diag(c) + eps)
    return np.mean(np.maximum(0, 1 - std)), (np.sum(c ** 2) - np.sum(np.diag(c) ** 2)) / d

  (v1, c1), (v2, c2) = terms(z1), terms(z2)
  return sim * inv + var * (v1 + v2) / 2 + cov * (c1 + c2)


LOSSES = {
    "barlow_twins": (lambda a, b, axis_name=None: losses.barlow_twins(a, b, lambd=5e-3, axis_name=axis_name)[0],
                     lambda a, b: numpy_barlow_twins(a, b, 5e-3)),
    "vicreg": (lambda a, b, axis_name=None: losses.vicreg(a, b, axis_name=axis_name)[0], numpy_vicreg),
}


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_loss_matches_numpy_value_and_gradient(name):
  ours, ref = LOSSES[name]
  rng = np.random.default_rng(0)
  # Small spread so VICReg's hinge (std < 1) is active for some dimensions and not others.
  z1 = rng.normal(size=(10, 4)) * rng.uniform(0.3, 1.6, size=4)
  z2 = z1 + 0.3 * rng.normal(size=(10, 4))
  value = ours(jnp.asarray(z1, jnp.float32), jnp.asarray(z2, jnp.float32))
  np.testing.assert_allclose(float(value), ref(z1, z2), rtol=2e-5)
  g1, g2 = jax.grad(ours, (0, 1))(jnp.asarray(z1, jnp.float32), jnp.asarray(z2, jnp.float32))
  np.testing.assert_allclose(np.asarray(g1), numerical_grad(lambda a: ref(a, z2), z1), atol=2e-4, rtol=2e-3)
  np.testing.assert_allclose(np.asarray(g2), numerical_grad(lambda b: ref(z1, b), z2), atol=2e-4, rtol=2e-3)


def test_barlow_twins_perfect_twins_have_zero_on_diagonal_loss():
  z = np.linalg.qr(np.random.default_rng(1).normal(size=(64, 8)))[0].astype(np.float32)  # Decorrelated columns.
  _, m = losses.barlow_twins(z, z)
  assert float(m["bt_on_diag"]) < 1e-3 and float(m["bt_off_diag"]) < 1e-2


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_global_batch_statistics_across_devices(name):
  """8 devices of 2 rows each give the single-device loss and gradients on all 16 rows;
  per-device statistics (the bug this guards against) would not."""
  ours, _ = LOSSES[name]
  rng = np.random.default_rng(2)
  z1 = rng.normal(size=(16, 6)).astype(np.float32)
  z2 = (z1 + 0.5 * rng.normal(size=(16, 6))).astype(np.float32)
  mesh = parallel.make_mesh(jax.devices()[:8])
  sharded = jax.shard_map(lambda a, b: ours(a, b, axis_name=parallel.DATA_AXIS), mesh=mesh,
                          in_specs=(P(parallel.DATA_AXIS), P(parallel.DATA_AXIS)), out_specs=P())
  np.testing.assert_allclose(float(jax.jit(sharded)(z1, z2)), float(ours(z1, z2)), rtol=1e-5)
  gs = jax.jit(jax.grad(sharded, (0, 1)))(z1, z2)
  g1 = jax.grad(ours, (0, 1))(z1, z2)
  for a, b in zip(gs, g1):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)
  # Per-device statistics would differ: the loss averaged over 2-row shards is another number.
  local = np.mean([float(ours(z1[i:i + 2], z2[i:i + 2])) for i in range(0, 16, 2)])
  assert abs(local - float(ours(z1, z2))) > 1e-3
