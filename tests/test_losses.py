"""NT-Xent and the collapse monitor against independent NumPy implementations."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

from reference import numerical_grad
from sslax import losses, monitors, parallel


def numpy_nt_xent(z1, z2, temperature):
  """The SimCLR formula written out directly, in float64."""
  z = np.concatenate([z1, z2]).astype(np.float64)
  z /= np.linalg.norm(z, axis=1, keepdims=True)
  n2 = z.shape[0]
  n = n2 // 2
  sim = z @ z.T / temperature
  total = 0.0
  for i in range(n2):
    pos = (i + n) % n2
    others = [j for j in range(n2) if j != i]
    total += -(sim[i, pos] - np.log(np.sum(np.exp(sim[i, others]))))
  return total / n2


@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_nt_xent_matches_numpy_value_and_gradient(temperature):
  rng = np.random.default_rng(0)
  z1, z2 = rng.normal(size=(6, 5)), rng.normal(size=(6, 5))
  loss, _ = losses.nt_xent(jnp.asarray(z1, jnp.float32), jnp.asarray(z2, jnp.float32), temperature=temperature)
  np.testing.assert_allclose(float(loss), numpy_nt_xent(z1, z2, temperature), rtol=1e-5)

  g1, g2 = jax.grad(lambda a, b: losses.nt_xent(a, b, temperature=temperature)[0], (0, 1))(
      jnp.asarray(z1, jnp.float32), jnp.asarray(z2, jnp.float32))
  ng1 = numerical_grad(lambda a: numpy_nt_xent(a, z2, temperature), z1)
  ng2 = numerical_grad(lambda b: numpy_nt_xent(z1, b, temperature), z2)
  np.testing.assert_allclose(np.asarray(g1), ng1, atol=2e-5, rtol=1e-3)
  np.testing.assert_allclose(np.asarray(g2), ng2, atol=2e-5, rtol=1e-3)


def test_nt_xent_agrees_with_optax_ntxent():
  rng = np.random.default_rng(1)
  z1, z2 = rng.normal(size=(8, 4)).astype(np.float32), rng.normal(size=(8, 4)).astype(np.float32)
  ours, _ = losses.nt_xent(z1, z2, temperature=0.5)
  ref = optax.ntxent(jnp.concatenate([z1, z2]), jnp.concatenate([jnp.arange(8), jnp.arange(8)]), temperature=0.5)
  np.testing.assert_allclose(float(ours), float(ref), rtol=1e-5)


def test_contrastive_top1_counts_positives_ranked_first():
  # Views identical and examples orthogonal: every positive ranks first.
  z = np.eye(4, dtype=np.float32)
  _, m = losses.nt_xent(z, z, temperature=0.5)
  assert float(m["contrastive_top1"]) == 1.0
  # View 2 paired with the wrong examples: no positive ranks first.
  _, m = losses.nt_xent(z, np.roll(z, 1, axis=0), temperature=0.5)
  assert float(m["contrastive_top1"]) == 0.0


def test_sharded_nt_xent_equals_single_device_and_gradients_flow_through_gather():
  rng = np.random.default_rng(2)
  z1, z2 = rng.normal(size=(16, 8)).astype(np.float32), rng.normal(size=(16, 8)).astype(np.float32)
  mesh = parallel.make_mesh(jax.devices()[:8])

  def sharded(a, b):
    f = jax.shard_map(lambda a, b: losses.nt_xent(a, b, temperature=0.2, axis_name=parallel.DATA_AXIS)[0],
                      mesh=mesh, in_specs=(P(parallel.DATA_AXIS), P(parallel.DATA_AXIS)), out_specs=P())
    return f(a, b)

  single = lambda a, b: losses.nt_xent(a, b, temperature=0.2)[0]
  np.testing.assert_allclose(float(jax.jit(sharded)(z1, z2)), float(single(z1, z2)), rtol=1e-6)
  gs = jax.jit(jax.grad(sharded, (0, 1)))(z1, z2)
  g1 = jax.grad(single, (0, 1))(z1, z2)
  for a, b in zip(gs, g1):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)


def test_embedding_std_reference_and_collapse():
  rng = np.random.default_rng(3)
  z = rng.normal(size=(64, 32))
  zn = z / np.linalg.norm(z, axis=1, keepdims=True)
  np.testing.assert_allclose(float(monitors.embedding_std(jnp.asarray(z, jnp.float32))), zn.std(0).mean(), rtol=1e-5)
  collapsed = np.tile(z[:1], (64, 1)).astype(np.float32)
  assert float(monitors.embedding_std(collapsed)) < 1e-3


def test_l2_normalize_has_a_finite_gradient_at_a_zero_vector():
  """A zero row (e.g. a tiny predictor whose ReLU inputs are all negative) must not give NaN."""
  x = jnp.array([[0.0, 0.0, 0.0], [3.0, 0.0, 4.0]])
  y = losses.l2_normalize(x)
  np.testing.assert_allclose(np.asarray(y), [[0.0, 0.0, 0.0], [0.6, 0.0, 0.8]], rtol=1e-6)
  grad = np.asarray(jax.grad(lambda x: jnp.sum(losses.l2_normalize(x) * jnp.array([1.0, 2.0, 3.0])))(x))
  assert np.isfinite(grad).all()
  # Away from zero: d(x/|x|) = (I - y y^T) / |x|, applied to the upstream gradient.
  upstream, row = np.array([1.0, 2.0, 3.0]), np.array([0.6, 0.0, 0.8])
  np.testing.assert_allclose(grad[1], (upstream - row * (row @ upstream)) / 5.0, rtol=1e-6)
