"""Mesh-level checks: batch/device divisibility errors and the online probe's isolation from the encoder.
(8 devices == 1 device for every method: test_method_contract.py.)"""
import jax
import numpy as np

from sslax import parallel
from sslax.step import build_setup, create_train_state, make_train_step


def _setup_and_state(config, devices, num_classes=10):
  setup = build_setup(config, num_train_examples=256, mesh=parallel.make_mesh(devices), num_classes=num_classes)
  return setup, create_train_state(setup, jax.random.PRNGKey(0))


def test_batch_not_divisible_by_devices_is_a_clear_error(tiny_config):
  import pytest

  with tiny_config.unlocked():
    tiny_config.batch_size = 12
  with pytest.raises(ValueError, match=r"not divisible by the 8 devices.*--config.batch_size=8"):
    build_setup(tiny_config, num_train_examples=256, mesh=parallel.make_mesh(jax.devices()[:8]))


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
    step = make_train_step(setup)
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
