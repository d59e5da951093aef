"""CPC v2: the patch grid, the causal context network and the InfoNCE over the global batch,
against independent references (the contract test covers its train steps like every method's)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P
from reference import load_config, numerical_grad

from sslax import parallel
from sslax.config_utils import ConfigError
from sslax.methods import METHODS
from sslax.methods.cpc import augment_patches, cpc_info_nce, overlapping_patches
from sslax.models.context import ContextNetwork, ContextPredictor


def test_overlapping_patches_are_the_strided_squares_of_the_image():
  x = np.random.default_rng(0).normal(size=(2, 14, 14, 3)).astype(np.float32)
  out = np.asarray(overlapping_patches(jnp.asarray(x), 6, 4))  # (14 - 6) / 4 + 1 = 3 per side
  assert out.shape == (2, 3, 3, 6, 6, 3)
  for i in range(3):
    for j in range(3):
      np.testing.assert_array_equal(out[:, i, j], x[:, 4 * i:4 * i + 6, 4 * j:4 * j + 6])


def test_patch_augmentation_flips_and_drops_colours_per_patch():
  x = np.random.default_rng(1).normal(size=(4, 9, 5, 5, 3)).astype(np.float32)
  keys = jax.random.split(jax.random.PRNGKey(0), 4)
  flipped = np.asarray(augment_patches(jnp.asarray(x), keys, 1.0, 0.0))
  np.testing.assert_array_equal(flipped, x[:, :, :, ::-1])
  same = np.asarray(augment_patches(jnp.asarray(x), keys, 0.0, 0.0))
  np.testing.assert_array_equal(same, x)
  dropped = np.asarray(augment_patches(jnp.asarray(x), keys, 0.0, 1.0))
  kept = (dropped == x).all(axis=(2, 3))  # (n, P, C): channels kept as they were
  assert (kept.sum(-1) == 1).all()
  half = np.asarray(augment_patches(jnp.asarray(x), jax.random.split(jax.random.PRNGKey(1), 4), 0.5, 0.0))
  flips = (half == x[:, :, :, ::-1]).all(axis=(2, 3, 4)) & ~(half == x).all(axis=(2, 3, 4))
  assert 0 < flips.sum() < flips.size and not (flips == flips[:1]).all()  # Chosen patch by patch.


@pytest.mark.parametrize("depth", [1, 3])
def test_the_context_cannot_see_the_rows_it_predicts(depth):
  g, d = 6, 5
  z = np.random.default_rng(2).normal(size=(2, g, g, d)).astype(np.float32)
  net = ContextNetwork(width=8, depth=depth)
  head = ContextPredictor(grid=g, num_steps=2, width=8, depth=depth)
  net_vars = net.init(jax.random.PRNGKey(0), jnp.asarray(z))
  head_vars = head.init(jax.random.PRNGKey(1), jnp.asarray(z.reshape(2, -1)))
  context = lambda v: np.asarray(net.apply(net_vars, jnp.asarray(v)))  # noqa: E731
  predict = lambda v: np.asarray(head.apply(head_vars, jnp.asarray(v.reshape(2, -1))))  # noqa: E731
  c0, p0 = context(z), predict(z)
  assert p0.shape == (2, 2, g, g, d)
  for r in range(g):
    perturbed = z.copy()
    perturbed[:, r] += np.random.default_rng(r).normal(size=(2, g, d)).astype(np.float32) * 3
    c1, p1 = context(perturbed), predict(perturbed)
    # Rows above r (whose context predicts rows r and below) do not move at all ...
    np.testing.assert_array_equal(c1[:, :r], c0[:, :r])
    np.testing.assert_array_equal(p1[:, :, :r], p0[:, :, :r])
    # ... while row r and the `depth` rows below it, which may read row r, do.
    for i in range(r, min(g, r + depth + 1)):
      assert np.abs(c1[:, i] - c0[:, i]).max() > 1e-3, (r, i)
      assert np.abs(p1[:, :, i] - p0[:, :, i]).max() > 1e-3, (r, i)
  # One column to either side per block: a perturbation at column 0 of row 0 reaches column depth, not beyond.
  perturbed = z.copy()
  perturbed[:, 0, 0] += 5.0
  moved = np.abs(context(perturbed) - c0).max(axis=(0, 3)) > 0  # (G, G) rows x columns
  assert moved[0, depth] and not moved[0, depth + 1:].any()


def numpy_cpc_loss(c, w, z, steps, temperature, similarity):
  """CPC's InfoNCE written out with loops in float64.

  Query (b, s, i, j) with i + k < G, k = steps[s]: prediction c[b, i, j] @ w[s]; its positive
  is z[b, i + k, j]; the negatives are every other patch vector z[b', r, q] of the batch.
  Returns (mean cross-entropy over all queries, fraction of queries ranking the positive first).
  """
  c, w, z = c.astype(np.float64), w.astype(np.float64), z.astype(np.float64)
  n, g = z.shape[:2]
  unit = lambda v: v / np.linalg.norm(v)  # noqa: E731
  flat = [(b, r, q) for b in range(n) for r in range(g) for q in range(g)]
  losses, hits = [], []
  for s, k in enumerate(steps):
    for b in range(n):
      for i in range(g - k):
        for j in range(g):
          pred = c[b, i, j] @ w[s]
          scores = []
          for (bb, r, q) in flat:
            a, t = (unit(pred), unit(z[bb, r, q])) if similarity == "cosine" else (pred, z[bb, r, q])
            scores.append(a @ t / temperature)
          scores = np.array(scores)
          pos = flat.index((b, i + k, j))
          losses.append(np.log(np.sum(np.exp(scores - scores.max()))) + scores.max() - scores[pos])
          hits.append(float(np.argmax(scores) == pos))
  return np.mean(losses), np.mean(hits)


def _predictions(c, w):
  return jnp.einsum("bijc,kcd->bkijd", c, w)  # W_k c at every position, (n, K, G, G, d)


@pytest.mark.parametrize("similarity,temperature", [("dot", 2.0), ("cosine", 0.3)])
def test_info_nce_matches_numpy_value_and_gradient(similarity, temperature):
  rng = np.random.default_rng(3)
  n, g, dc, d, steps = 2, 4, 3, 4, (1, 3)
  c = rng.normal(size=(n, g, g, dc)).astype(np.float32)
  w = rng.normal(size=(len(steps), dc, d)).astype(np.float32)
  z = rng.normal(size=(n, g, g, d)).astype(np.float32)
  # Targets one row below close to their k=1 predictions: some positives rank first, not all.
  z[:, 1:] += 2 * np.einsum("bijc,cd->bijd", c[:, :-1], w[0])

  def ours(c, w, z):
    return cpc_info_nce(_predictions(c, w), z, steps, temperature=temperature, similarity=similarity)

  loss, metrics = ours(jnp.asarray(c), jnp.asarray(w), jnp.asarray(z))
  want, top1 = numpy_cpc_loss(c, w, z, steps, temperature, similarity)
  np.testing.assert_allclose(float(loss), want, rtol=1e-5)
  np.testing.assert_allclose(float(metrics["contrastive_top1"]), top1, rtol=1e-6)
  assert 0 < top1 < 1  # Neither trivially right nor wrong: the comparison counts.
  gz, gw = jax.grad(lambda z, w: ours(jnp.asarray(c), w, z)[0], (0, 1))(jnp.asarray(z), jnp.asarray(w))
  ref = lambda z, w: numpy_cpc_loss(c, w, z, steps, temperature, similarity)[0]  # noqa: E731
  np.testing.assert_allclose(np.asarray(gz), numerical_grad(lambda v: ref(v, w), z.astype(np.float64)),
                             atol=2e-5, rtol=1e-3)
  np.testing.assert_allclose(np.asarray(gw), numerical_grad(lambda v: ref(z, v), w.astype(np.float64)),
                             atol=2e-5, rtol=1e-3)


def test_negatives_come_from_the_global_batch_eight_devices_equal_one():
  rng = np.random.default_rng(4)
  n, g, d, steps = 16, 3, 4, (1, 2)
  predictions = rng.normal(size=(n, len(steps), g, g, d)).astype(np.float32)
  z = rng.normal(size=(n, g, g, d)).astype(np.float32)
  mesh = parallel.make_mesh(jax.devices()[:8])

  def sharded(p, z):
    f = jax.shard_map(lambda p, z: cpc_info_nce(p, z, steps, temperature=0.5, axis_name=parallel.DATA_AXIS),
                      mesh=mesh, in_specs=(P(parallel.DATA_AXIS), P(parallel.DATA_AXIS)), out_specs=P())
    return f(p, z)

  single = lambda p, z: cpc_info_nce(p, z, steps, temperature=0.5)  # noqa: E731
  (l8, m8), (l1, m1) = jax.jit(sharded)(predictions, z), single(predictions, z)
  np.testing.assert_allclose(float(l8), float(l1), rtol=1e-6)
  np.testing.assert_allclose(float(m8["contrastive_top1"]), float(m1["contrastive_top1"]), rtol=1e-6)
  # Each device's rows alone (negatives from its own 2 images) would give another loss.
  local = np.mean([float(single(predictions[i:i + 2], z[i:i + 2])[0]) for i in range(0, n, 2)])
  assert abs(local - float(l1)) > 0.1
  g8 = jax.jit(jax.grad(lambda p, z: sharded(p, z)[0], (0, 1)))(predictions, z)
  g1 = jax.grad(lambda p, z: single(p, z)[0], (0, 1))(predictions, z)
  for a, b in zip(g8, g1):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)


def test_cpc_config_is_checked_with_errors_naming_the_field():
  cls = METHODS["cpc"]
  config, _ = load_config("cpc")
  cls.validate_config(config)
  method = cls(config)
  assert method.grid == 3 and method.classifier_group == 9  # 16-pixel crops, 8-pixel patches every 4 pixels
  with pytest.raises(ConfigError, match=r"patch_size=7 .*stride=4 does not tile"):
    cls.validate_config(load_config("cpc", **{"cpc.patch_size": 7})[0])
  with pytest.raises(ConfigError, match=r"config\.cpc\.steps=\(1, 3\).*k <= 2"):
    cls.validate_config(load_config("cpc", **{"cpc.steps": (1, 3)})[0])
  with pytest.raises(ConfigError, match=r"num_steps=2 must equal len\(config\.cpc\.steps\)=1"):
    cls.validate_config(load_config("cpc", **{"cpc.steps": (1,)})[0])
  with pytest.raises(ConfigError, match="context network"):
    from sslax.presets import mlp_head

    cls.validate_config(load_config("cpc", **{"model.classifier": mlp_head((8,), 4)})[0])
  with pytest.raises(ConfigError, match="multiple of config.model.patch_size"):
    cls.validate_config(load_config("cpc", **{"model.backbone": "vit_test", "model.patch_size": 3})[0])


def test_evaluation_averages_over_patch_sized_grid_tiles():
  from sslax.evaluate.features import grid_tile_size

  cpu, _ = load_config("cpc", "cpu")  # 8-pixel patches of 32-pixel views
  assert METHODS["cpc"].representation_tile_size(cpu) == 8
  assert grid_tile_size(cpu, 32) == 8 and grid_tile_size(cpu, 64) == 16
  imagenet, _ = load_config("cpc", "imagenet")  # 64-pixel patches of 256-pixel crops, evaluated at 224
  assert METHODS["cpc"].grid_side(imagenet) == 7 and grid_tile_size(imagenet, 224) == 56
