"""One SimCLR step on 8 devices equals the same step on 1 device for the same global batch."""
import jax
import numpy as np

from sslax import parallel, train


def _setup_and_state(config, devices, num_classes=10):
  setup = train.build_setup(config, num_train_examples=256, mesh=parallel.make_mesh(devices), num_classes=num_classes)
  return setup, train.create_train_state(setup, jax.random.PRNGKey(0))


def test_eight_devices_equal_one_device(tiny_config):
  assert jax.device_count() >= 8, "conftest must give 8 CPU devices"
  rng = np.random.default_rng(0)
  batch_np = {"image": rng.integers(0, 256, size=(16, 32, 32, 3), dtype=np.uint8),
              "label": rng.integers(0, 10, size=(16,)).astype(np.int32)}
  with tiny_config.unlocked():
    tiny_config.warmup_steps = 0  # A non-zero learning rate at step 0, so the update is visible.
  results = {}
  for n in (1, 8):
    setup, state = _setup_and_state(tiny_config, jax.devices()[:n])
    batch = parallel.to_global_batch(batch_np, setup.mesh)
    loss, grads = train.make_grad_fn(setup)(state, batch)
    new_state, metrics = train.make_train_step(setup)(state, batch)
    results[n] = jax.device_get((loss, grads, new_state.params, new_state.batch_stats, metrics, new_state.probe))

  (loss1, g1, p1, bs1, m1, pr1), (loss8, g8, p8, bs8, m8, pr8) = results[1], results[8]
  np.testing.assert_allclose(loss8, loss1, rtol=1e-5)
  np.testing.assert_allclose(m8["loss"], m1["loss"], rtol=1e-5)
  np.testing.assert_allclose(m8["contrastive_top1"], m1["contrastive_top1"])
  np.testing.assert_allclose(m8["online_probe_loss"], m1["online_probe_loss"], rtol=1e-5)
  np.testing.assert_allclose(m8["online_probe_top1"], m1["online_probe_top1"])
  for tree8, tree1 in ((g8, g1), (p8, p1), (bs8, bs1), (pr8, pr1)):
    leaves8, leaves1 = jax.tree.leaves(tree8), jax.tree.leaves(tree1)
    assert len(leaves8) == len(leaves1) > 0
    for a, b in zip(leaves8, leaves1):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
  # The step really changed the parameters (so the comparison above is not vacuous).
  _, state0 = _setup_and_state(tiny_config, jax.devices()[:1])
  delta = max(float(np.max(np.abs(a - b))) for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(jax.device_get(state0.params))))
  assert delta > 1e-6


def test_batch_not_divisible_by_devices_is_a_clear_error(tiny_config):
  import pytest

  with tiny_config.unlocked():
    tiny_config.batch_size = 12
  with pytest.raises(ValueError, match=r"not divisible by the 8 devices.*--config.batch_size=8"):
    train.build_setup(tiny_config, num_train_examples=256, mesh=parallel.make_mesh(jax.devices()[:8]))


def test_online_probe_learns_without_touching_the_encoder(tiny_config):
  """The probe trains on stop_gradient(features): encoder params are the same with or without it."""
  with tiny_config.unlocked():
    tiny_config.warmup_steps = 0
  rng = np.random.default_rng(1)
  batch_np = {"image": rng.integers(0, 256, size=(16, 32, 32, 3), dtype=np.uint8),
              "label": rng.integers(0, 10, size=(16,)).astype(np.int32)}
  out = {}
  for num_classes in (0, 10):
    setup, state = _setup_and_state(tiny_config, jax.devices()[:2], num_classes=num_classes)
    batch = parallel.to_global_batch(batch_np if num_classes else {"image": batch_np["image"]}, setup.mesh)
    step = train.make_train_step(setup)
    probe_losses = []
    for _ in range(3):
      state, metrics = step(state, batch)
      probe_losses.append(float(metrics.get("online_probe_loss", np.nan)))
    out[num_classes] = (jax.device_get(state.params), jax.device_get(state.probe), probe_losses)
  for a, b in zip(jax.tree.leaves(out[0][0]), jax.tree.leaves(out[10][0])):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)  # Different programs may round differently.
  assert out[0][1] == {}
  probe, losses = out[10][1], out[10][2]
  assert np.abs(probe["params"]["w"]).max() > 0  # Trained from zeros.
  np.testing.assert_allclose(losses[0], np.log(10), rtol=1e-5)  # Zero-initialised: uniform logits.
  assert losses[-1] < losses[0]
