"""The memory bank of InstDisc/NPID and PIRL (sslax/methods/memory_bank.py).

- The bank update against NumPy, on 8 devices and on 1: every example of the global batch
  written once at its index, the other rows untouched.
- NCE with the once-estimated normaliser Z against a NumPy reference.
- PIRL's jigsaw input: each image's 9 tiles in a random order.
- A run stopped and resumed ends with the bank of an uninterrupted run, bit for bit.
"""
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from reference import load_config, restore_train_state
from sslax import parallel, train
from sslax.methods import get_method

NUM_EXAMPLES = 40


def _method(name="npid", **overrides):
  config, _ = load_config(name, **overrides)
  return get_method(config, num_examples=NUM_EXAMPLES)


def _unit(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_bank_update_writes_each_example_once_on_eight_devices_as_on_one():
  method = _method()
  state = jax.device_get(method.init_state({}, jax.random.PRNGKey(0)))
  rng = np.random.default_rng(0)
  v = _unit(rng.normal(size=(16, state["bank"].shape[1]))).astype(np.float32)
  index = rng.permutation(NUM_EXAMPLES)[:16].astype(np.int32)
  log_z = jnp.float32(3.5)

  expected = state["bank"].copy()
  expected[index] = _unit(0.5 * state["bank"][index] + 0.5 * v)

  single = method.update_bank(jax.tree.map(jnp.asarray, state), v, index, log_z, None)
  mesh = parallel.make_mesh(jax.devices()[:8])
  sharded = jax.jit(jax.shard_map(lambda s, v, i: method.update_bank(s, v, i, log_z, parallel.DATA_AXIS), mesh=mesh,
                                  in_specs=(P(), P(parallel.DATA_AXIS), P(parallel.DATA_AXIS)), out_specs=P()))(
                                      state, v, index)
  for got in (single, sharded):
    np.testing.assert_allclose(np.asarray(got["bank"]), expected, rtol=1e-6, atol=1e-7)
    assert bool(got["normalizer_ready"]) and float(got["log_normalizer"]) == 3.5
  np.testing.assert_array_equal(np.asarray(sharded["bank"]), np.asarray(single["bank"]))
  untouched = np.setdiff1d(np.arange(NUM_EXAMPLES), index)
  np.testing.assert_array_equal(np.asarray(single["bank"])[untouched], state["bank"][untouched])


def _numpy_nce(v, bank, index, negatives, temperature, n_data, log_z=None):
  """InstDisc's NCE: h = P(i|v) / (P(i|v) + m / n), P(i|v) = exp(v.m_i / T) / Z."""
  v, bank = v.astype(np.float64), bank.astype(np.float64)
  pos = np.exp(np.sum(v * bank[index], axis=1) / temperature)
  neg = np.exp(v @ bank[negatives].T / temperature)
  m = len(negatives)
  if log_z is None:  # Z = n x the mean over the batch's positives and negatives.
    log_z = np.log(n_data * np.mean(np.concatenate([pos[:, None], neg], axis=1)))
  z = np.exp(log_z)
  h = lambda p: (p / z) / (p / z + m / n_data)  # noqa: E731
  return np.mean(-np.log(h(pos)) - np.sum(np.log(1.0 - h(neg)), axis=1)), log_z


def test_nce_against_numpy_with_the_estimated_then_stored_normaliser():
  method = _method(**{"npid.num_negatives": 7})
  state = jax.device_get(method.init_state({}, jax.random.PRNGKey(1)))
  rng = np.random.default_rng(1)
  v = _unit(rng.normal(size=(8, state["bank"].shape[1]))).astype(np.float32)
  index = np.arange(8, dtype=np.int32)
  negatives = np.asarray(method.negative_indices(jnp.int32(5)))
  assert negatives.shape == (7,) and negatives.min() >= 0 and negatives.max() < NUM_EXAMPLES
  t = method.temperature

  loss, log_z, _ = method.nce(v, index, state, negatives, None)
  ref_loss, ref_log_z = _numpy_nce(v, state["bank"], index, negatives, t, NUM_EXAMPLES)
  np.testing.assert_allclose(float(log_z), ref_log_z, rtol=1e-5)
  np.testing.assert_allclose(float(loss), ref_loss, rtol=1e-4)

  # Once estimated, Z stays: a stored log Z is used as it is.
  stored = dict(state, log_normalizer=jnp.float32(ref_log_z + 2.0), normalizer_ready=jnp.ones((), bool))
  loss, log_z, _ = method.nce(v, index, stored, negatives, None)
  np.testing.assert_allclose(float(log_z), ref_log_z + 2.0, rtol=1e-6)
  np.testing.assert_allclose(float(loss), _numpy_nce(v, state["bank"], index, negatives, t, NUM_EXAMPLES,
                                                     log_z=ref_log_z + 2.0)[0], rtol=1e-4)


def test_pirl_jigsaw_view_holds_each_images_nine_tiles_in_a_random_order():
  method = _method("pirl", **{"pirl.channel_jitter": 0})
  size, t = 15, method.settings.tile_size  # Cells of 5 pixels.
  # Random pixels: a standardised window identifies where in the image it was cut.
  images = jnp.asarray(np.random.default_rng(2).normal(size=(2, size, size, 3)), jnp.float32)
  tiles = np.asarray(method.jigsaw_tiles(images, jnp.int32(0), None)).reshape(2, 9, t, t, 3)
  # Normalised on their own, each tile is a copy of a 3x3-grid cell of its image; the order is a permutation.
  np.testing.assert_allclose(tiles.mean(axis=(2, 3, 4)), 0.0, atol=1e-5)
  for img in range(2):
    cells = []
    for k in range(9):
      raw = np.asarray(images[img])
      matches = [c for c in range(9) for dy in range(5 - t + 1) for dx in range(5 - t + 1)
                 if np.allclose(_standardise(raw[c // 3 * 5 + dy:c // 3 * 5 + dy + t, c % 3 * 5 + dx:c % 3 * 5 + dx + t]),
                                tiles[img, k], atol=1e-4)]
      assert len(set(matches)) == 1
      cells.append(matches[0])
    assert sorted(cells) == list(range(9))
  orders = [tuple(np.asarray(method.jigsaw_tiles(images, jnp.int32(s), None)).reshape(2, 9, -1)[0, :, 0]) for s in range(4)]
  assert len(set(orders)) > 1  # The order changes with the step.


def _standardise(x):
  x = x.astype(np.float64)
  return (x - x.mean()) / (x.std() + 1e-5)


def test_resumed_npid_run_ends_with_the_uninterrupted_bank(tmp_path):
  # 256 training images: the size restore_train_state builds the bank for.
  config, _ = load_config("npid", **{"data.source": "synthetic", "data.synthetic.num_train_examples": 256,
                                     "data.synthetic.num_eval_examples": 64, "knn.at_end": False})
  mesh = parallel.make_mesh(jax.devices()[:1])
  full, parts = str(tmp_path / "full"), str(tmp_path / "parts")
  train.train_and_evaluate(config, full, mesh=mesh)
  stopped = config.copy_and_resolve_references()
  with stopped.unlocked():
    stopped.stop_at_step = 3
  assert train.train_and_evaluate(stopped, parts, mesh=mesh)["step"] == 3
  train.train_and_evaluate(config, parts, mesh=mesh)
  a, b = restore_train_state(config, full), restore_train_state(config, parts)
  assert int(a.step) == int(b.step) == config.total_steps
  initial = jax.device_get(get_method(config, num_examples=256).init_state({}, jax.random.PRNGKey(0)))["bank"]
  assert a.method_state["bank"].shape == initial.shape
  assert not np.array_equal(a.method_state["bank"], initial)  # Training wrote into the bank.
  for x, y in zip(jax.tree.leaves(a.method_state), jax.tree.leaves(b.method_state), strict=True):
    np.testing.assert_array_equal(x, y)
  np.testing.assert_array_equal(jax.tree.leaves(a.params)[0], jax.tree.leaves(b.params)[0])
  assert bool(a.method_state["normalizer_ready"])
