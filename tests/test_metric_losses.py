"""The classic metric-learning losses (sslax.losses) against independent NumPy references.

Each reference is written from the paper's formula with explicit loops over embeddings in
float64 (its own distances, masks and mining); values and gradients (central differences)
are compared, and each loss on 8 devices (shard_map, negatives from the global batch) equals
the loss on 1 device, gradients included.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from reference import numerical_grad
from sslax import losses, parallel


def _embeddings(z1, z2, normalize=True):
  """[z1; z2] (2N, d) in float64 and each row's example index."""
  z = np.concatenate([z1, z2]).astype(np.float64)
  if normalize:
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
  n = z1.shape[0]
  return z, np.concatenate([np.arange(n), np.arange(n)])


def _dist(a, b):
  return np.sqrt(np.sum((a - b) ** 2))


def np_contrastive(z1, z2, margin):
  z, ex = _embeddings(z1, z2)
  pos, neg = [], []
  for i in range(len(z)):
    for j in range(len(z)):
      if i == j:
        continue
      d = _dist(z[i], z[j])
      (pos if ex[i] == ex[j] else neg).append(0.5 * d**2 if ex[i] == ex[j] else 0.5 * max(0.0, margin - d) ** 2)
  return np.mean(pos) + np.mean(neg)


def np_triplet(z1, z2, margin, mining):
  z, ex = _embeddings(z1, z2)
  m = len(z)
  terms = []
  for a in range(m):
    p = next(j for j in range(m) if j != a and ex[j] == ex[a])
    d_ap = _dist(z[a], z[p]) ** 2
    d_an = {k: _dist(z[a], z[k]) ** 2 for k in range(m) if ex[k] != ex[a]}
    if mining == "batch_all":
      terms += [max(0.0, d_ap - d + margin) for d in d_an.values()]
      continue
    if mining == "batch_hard":
      chosen = min(d_an.values())
    else:
      farther = [d for d in d_an.values() if d > d_ap]
      chosen = min(farther) if farther else max(d_an.values())
    terms.append(max(0.0, d_ap - chosen + margin))
  terms = np.asarray(terms)
  if mining == "batch_all":
    return terms[terms > 0].mean() if (terms > 0).any() else 0.0
  return terms.mean()


def np_n_pair(z1, z2, l2_reg):
  a, p = z1.astype(np.float64), z2.astype(np.float64)
  n = len(a)
  total = 0.0
  for i in range(n):
    total += np.log(1.0 + sum(np.exp(a[i] @ p[j] - a[i] @ p[i]) for j in range(n) if j != i))
  reg = np.mean([a[i] @ a[i] + p[i] @ p[i] for i in range(n)])
  return total / n + l2_reg * reg


def np_lifted(z1, z2, margin):
  z, ex = _embeddings(z1, z2)
  n = len(z1)
  total = 0.0
  for e in range(n):
    i, j = e, e + n
    negatives = sum(np.exp(margin - _dist(z[i], z[k])) for k in range(2 * n) if ex[k] != e)
    negatives += sum(np.exp(margin - _dist(z[j], z[k])) for k in range(2 * n) if ex[k] != e)
    total += max(0.0, np.log(negatives) + _dist(z[i], z[j])) ** 2
  return total / (2 * n)


def np_nce(z1, z2, temperature, base):
  """NCE with Z estimated from the `base` views, a constant under differentiation (stop_gradient)."""
  z, ex = _embeddings(z1, z2)
  m = len(z)
  s = z @ z.T / temperature
  zb, _ = _embeddings(*base)
  sb = zb @ zb.T / temperature
  # Z: (2N - 1) x the mean of exp(s) over all rows and their 2N - 1 candidates.
  z_hat = (m - 1) * np.mean([np.exp(sb[i, j]) for i in range(m) for j in range(m) if j != i])
  k, p_n = m - 2, 1.0 / (m - 1)
  h = lambda x: np.exp(x) / z_hat / (np.exp(x) / z_hat + k * p_n)  # noqa: E731
  total = 0.0
  for i in range(m):
    for j in range(m):
      if j == i:
        continue
      total += -np.log(h(s[i, j])) if ex[j] == ex[i] else -np.log(1.0 - h(s[i, j]))
  return total / m


def np_snnl(z1, z2, temperature):
  z, ex = _embeddings(z1, z2)
  m = len(z)
  total = 0.0
  for i in range(m):
    w = {j: np.exp(-(_dist(z[i], z[j]) ** 2) / temperature) for j in range(m) if j != i}
    total += -np.log(sum(v for j, v in w.items() if ex[j] == ex[i]) / sum(w.values()))
  return total / m


# name -> (sslax loss with its settings, NumPy reference of (z1, z2, base)); `base` is the
# unperturbed pair, for the constants a loss holds fixed under differentiation (NCE's Z).
CASES = {
    "contrastive": (functools.partial(losses.contrastive_margin_loss, margin=0.8),
                    lambda a, b, base: np_contrastive(a, b, 0.8)),
    "triplet_batch_all": (functools.partial(losses.triplet_loss, margin=0.3, mining="batch_all"),
                          lambda a, b, base: np_triplet(a, b, 0.3, "batch_all")),
    "triplet_batch_hard": (functools.partial(losses.triplet_loss, margin=0.3, mining="batch_hard"),
                           lambda a, b, base: np_triplet(a, b, 0.3, "batch_hard")),
    "triplet_semi_hard": (functools.partial(losses.triplet_loss, margin=0.3, mining="semi_hard"),
                          lambda a, b, base: np_triplet(a, b, 0.3, "semi_hard")),
    "n_pair": (functools.partial(losses.n_pair_loss, l2_reg=0.01), lambda a, b, base: np_n_pair(a, b, 0.01)),
    "lifted": (functools.partial(losses.lifted_structured_loss, margin=1.0), lambda a, b, base: np_lifted(a, b, 1.0)),
    "nce": (functools.partial(losses.nce_pair_loss, temperature=0.5), lambda a, b, base: np_nce(a, b, 0.5, base)),
    "snnl": (functools.partial(losses.soft_nearest_neighbor_loss, temperature=0.5), lambda a, b, base: np_snnl(a, b, 0.5)),
}


def _views(seed, n=6, d=5):
  rng = np.random.default_rng(seed)
  z1 = rng.normal(size=(n, d))
  return z1, z1 + 1.0 * rng.normal(size=(n, d))  # Correlated views: some triplets active, some not.


@pytest.mark.parametrize("name", sorted(CASES))
def test_metric_loss_matches_numpy_value_and_gradient(name):
  fn, ref = CASES[name]
  z1, z2 = _views(0)
  loss = lambda a, b: fn(a, b)[0]  # noqa: E731
  np.testing.assert_allclose(float(loss(jnp.asarray(z1, jnp.float32), jnp.asarray(z2, jnp.float32))),
                             ref(z1, z2, (z1, z2)), rtol=2e-5, atol=1e-6)
  g1, g2 = jax.grad(loss, (0, 1))(jnp.asarray(z1, jnp.float32), jnp.asarray(z2, jnp.float32))
  # The mining choices are piecewise constant; the random views keep every comparison away
  # from a tie, so the central differences see one piece.
  np.testing.assert_allclose(np.asarray(g1), numerical_grad(lambda a: ref(a, z2, (z1, z2)), z1), rtol=2e-3, atol=5e-5)
  np.testing.assert_allclose(np.asarray(g2), numerical_grad(lambda b: ref(z1, b, (z1, z2)), z2), rtol=2e-3, atol=5e-5)


def test_triplet_mining_choices_pick_different_negatives():
  # On these views the three minings give three different losses, so each test above checks its own rule.
  z1, z2 = (jnp.asarray(v, jnp.float32) for v in _views(0))
  values = {m: float(losses.triplet_loss(z1, z2, margin=0.3, mining=m)[0]) for m in losses.TRIPLET_MINING}
  assert len({round(v, 6) for v in values.values()}) == 3, values
  with pytest.raises(ValueError, match="Unknown triplet mining 'hardest'"):
    losses.triplet_loss(z1, z2, margin=0.3, mining="hardest")


def test_nce_binary_loss_is_the_logistic_loss_of_shifted_scores():
  pos, neg = np.array([1.0, -0.5]), np.array([[0.3, -2.0, 0.1], [1.5, 0.0, -1.0]])
  log_z, log_noise = 0.7, np.log(3 / 50)
  sig = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
  expected = -np.log(sig(pos - log_z - log_noise)) - np.log(1 - sig(neg - log_z - log_noise)).sum(1)
  got = losses.nce_binary_loss(jnp.asarray(pos), jnp.asarray(neg), log_normalizer=log_z, log_noise_mass=log_noise)
  np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-6)


@pytest.mark.parametrize("name", sorted(CASES))
def test_metric_loss_on_eight_devices_equals_one_device(name):
  fn, _ = CASES[name]
  z1, z2 = (np.asarray(v, np.float32) for v in _views(1, n=16, d=8))
  mesh = parallel.make_mesh(jax.devices()[:8])

  def sharded(a, b):
    f = jax.shard_map(lambda a, b: fn(a, b, axis_name=parallel.DATA_AXIS)[0], mesh=mesh,
                      in_specs=(P(parallel.DATA_AXIS), P(parallel.DATA_AXIS)), out_specs=P())
    return f(a, b)

  single = lambda a, b: fn(a, b)[0]  # noqa: E731
  np.testing.assert_allclose(float(jax.jit(sharded)(z1, z2)), float(single(z1, z2)), rtol=1e-5)
  for a, b in zip(jax.jit(jax.grad(sharded, (0, 1)))(z1, z2), jax.grad(single, (0, 1))(z1, z2)):
    assert np.isfinite(np.asarray(a)).all()
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)
