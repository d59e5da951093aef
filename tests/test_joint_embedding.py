"""Method-specific behaviour of the joint-embedding family: EMA targets, queues, frozen
prototypes, DINO's center, multi-crop views, collapse monitors, ViT backbones, DeepCluster's
k-means and the config checks. (8 devices == 1 device, gradient isolation of target networks
and checkpoint round trips are checked for every method in test_method_contract.py.)"""
import logging

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import reference
from reference import assert_trees_close, random_batch

from sslax import augment, losses, monitors, parallel, train
from sslax.data.preprocessing import normalize
from sslax.methods import METHODS, common
from sslax.methods.byol import BYOL
from sslax.state import TrainState
from sslax.step import build_setup, collapse_metrics, create_train_state, make_grad_fn, make_train_step


def load_config(name, preset="tiny", **overrides):
  """A tiny preset without warm-up, so the first step has a non-zero learning rate."""
  return reference.load_config(name, preset, **{"warmup_steps": 0, **overrides})


JOINT_EMBEDDING = ("byol", "simsiam", "moco_v2", "moco_v3", "swav", "dino")


def test_ema_target_equals_closed_form_after_k_updates():
  """With fixed online params P the recurrence T <- tau_i T + (1 - tau_i) P has the closed
  form T_k = P + prod_i tau_i (T_0 - P), tau_i from the cosine schedule written out here."""
  config, _ = load_config("byol")
  method = BYOL(config, total_steps=10)
  method.base_momentum = 0.9
  rng = np.random.default_rng(0)
  online = {"backbone": {"w": rng.normal(size=(3, 2)).astype(np.float32)}, "predictor": {"w": np.ones(2, np.float32)}}
  target0 = {"backbone": {"w": rng.normal(size=(3, 2)).astype(np.float32)}}
  state = TrainState(step=jnp.int32(0), params=online, batch_stats={}, opt_state={},
                           method_state={"target_params": target0}, probe={})
  k = 7
  for _ in range(k):
    state = method.post_update(state.replace(step=state.step + 1))
  taus = [1 - (1 - 0.9) * (np.cos(np.pi * i / 10) + 1) / 2 for i in range(k)]
  expected = online["backbone"]["w"] + np.prod(taus) * (target0["backbone"]["w"] - online["backbone"]["w"])
  np.testing.assert_allclose(np.asarray(state.method_state["target_params"]["backbone"]["w"]), expected, rtol=1e-5)
  assert "predictor" not in state.method_state["target_params"]  # The target has no predictor.
  np.testing.assert_allclose(float(method.momentum(jnp.int32(10))), 1.0)


def test_enqueue_keeps_the_latest_keys_in_order_and_wraps_around():
  queue, pointer = jnp.zeros((12, 2)), jnp.int32(0)
  written = []
  from sslax.methods.moco import enqueue

  for step in range(5):  # 20 keys into 12 slots: wraps around after 3 steps.
    keys = np.arange(8, dtype=np.float32).reshape(4, 2) + 100 * step
    written.append(keys)
    queue, pointer = enqueue(queue, pointer, jnp.asarray(keys))
  expected = np.zeros((12, 2), np.float32)
  for step, keys in enumerate(written):
    start = (4 * step) % 12
    expected[start:start + 4] = keys
  np.testing.assert_array_equal(np.asarray(queue), expected)
  assert int(pointer) == 20 % 12


def _reference_views(config, images, step=0):
  """The train step's views of the global batch, computed on one device."""
  keys = augment.example_keys(config.seed, step, np.arange(len(images)))
  views = augment.multicrop_views(jnp.asarray(images), keys, config.augment)
  return [normalize(v, config.data.mean, config.data.std) for v in views]


def _one_device_outputs(setup, params, batch_stats, views, predict=False):
  from jax.sharding import PartitionSpec as P

  fn = lambda p, s, *v: common.multi_view_forward(setup.model, p, s, list(v), predict=predict)[0]
  mesh1 = parallel.make_mesh(jax.devices()[:1])
  return jax.jit(jax.shard_map(fn, mesh=mesh1, in_specs=(P(),) * (2 + len(views)), out_specs=P()))(
      params, batch_stats, *views)


def _step_on_eight_devices_and_target_outputs(name, num_views=None):
  """One 8-device train step of `name` from its initial state, and the initial target
  network's outputs on the step's views computed separately on one device.

  Returns:
    (config, state after the step, per-view target outputs).
  """
  config, _ = load_config(name, **{"model.backbone": "vit_test"})
  setup = build_setup(config, 256, mesh=parallel.make_mesh(jax.devices()[:8]))
  state = create_train_state(setup, jax.random.PRNGKey(0))
  target = jax.device_get(state.method_state["target_params"])
  batch_stats = jax.device_get(state.batch_stats)
  images = random_batch()["image"]
  state, _ = make_train_step(setup)(state, parallel.to_global_batch({"image": images}, setup.mesh))
  views = _reference_views(config, images)[:num_views]
  return config, state, _one_device_outputs(setup, target, batch_stats, views)


def test_moco_queue_holds_the_gathered_keys_in_global_batch_order():
  config, state, outputs = _step_on_eight_devices_and_target_outputs("moco_v2")
  k1, k2 = [losses.l2_normalize(o["projection"]) for o in outputs]
  queue = np.asarray(state.method_state["queue"])
  # Symmetric loss: keys of view 2 (for queries of view 1), then keys of view 1, 16 each.
  np.testing.assert_allclose(queue[:16], np.asarray(k2), rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(queue[16:32], np.asarray(k1), rtol=1e-4, atol=1e-5)
  assert int(state.method_state["queue_pointer"]) == 32 % config.moco_v2.queue_size


def test_dino_center_is_the_ema_of_the_global_teacher_mean():
  config, state, outputs = _step_on_eight_devices_and_target_outputs("dino", num_views=2)
  scores = np.concatenate([np.asarray(o["scores"]) for o in outputs])
  expected = (1 - config.dino.center_momentum) * scores.mean(axis=0)  # The center starts at 0.
  np.testing.assert_allclose(np.asarray(state.method_state["center"]), expected, rtol=1e-4, atol=1e-6)


def test_prototypes_get_no_gradient_while_frozen():
  # SwAV's frozen prototypes; DINO's frozen last layer goes through the same freeze_prototypes.
  config, _ = load_config("swav", **{"model.backbone": "vit_test", "swav.freeze_prototypes_epochs": 1.0})
  setup = build_setup(config, 256, mesh=parallel.make_mesh(jax.devices()[:1]))  # 16 steps per epoch.
  state = create_train_state(setup, jax.random.PRNGKey(0))
  batch = parallel.to_global_batch({"image": random_batch()["image"]}, setup.mesh)
  grad_fn = make_grad_fn(setup)
  _, frozen = grad_fn(state, batch)
  _, free = grad_fn(state.replace(step=jnp.int32(setup.steps_per_epoch)), batch)
  assert float(jnp.abs(frozen["prototypes"]["kernel"]).max()) == 0.0
  assert float(jnp.abs(free["prototypes"]["kernel"]).max()) > 0.0
  assert float(jnp.abs(frozen["backbone"]["patch_embed"]["kernel"]).max()) > 0.0


def test_multicrop_views_have_global_and_local_sizes():
  config, _ = load_config("swav")
  images = jnp.asarray(random_batch(4)["image"])
  keys = augment.example_keys(0, 0, np.arange(4))
  views = augment.multicrop_views(images, keys, config.augment)
  assert [v.shape for v in views] == [(4, 16, 16, 3)] * 2 + [(4, 8, 8, 3)] * 2
  assert not np.allclose(np.asarray(views[2]), np.asarray(views[3]))  # Each local crop has its own key.
  # The global views are the two-view pipeline's views: multi-crop only adds views.
  two = augment.simclr_views(images, keys, config.augment)
  np.testing.assert_array_equal(np.asarray(views[0]), np.asarray(two[0]))


def test_simsiam_predictor_trains_at_a_fixed_learning_rate():
  from sslax.optim import build_optimizer

  config, _ = load_config("simsiam")
  tx, schedule = build_optimizer(config.optimizer, batch_size=256, total_steps=10, warmup_steps=3)
  params = {"backbone": {"kernel": jnp.ones((2, 2))}, "predictor": {"kernel": jnp.ones((2, 2))}}
  grads = jax.tree.map(jnp.ones_like, params)
  state = tx.init(params)
  first = None
  for _ in range(10):  # Warm-up then cosine decay to 0 for the backbone; constant for the predictor.
    updates, state = tx.update(grads, state, params)
    first = updates if first is None else first
  assert float(optax.tree.norm(first["backbone"])) == 0.0 and float(optax.tree.norm(first["predictor"])) > 0
  assert float(schedule(9)) < 0.1 * float(schedule(3))
  # The same gradient 10 times at a constant rate: momentum makes the update sum_i 0.9^i times the first.
  np.testing.assert_allclose(float(optax.tree.norm(updates["predictor"])) / float(optax.tree.norm(first["predictor"])),
                             sum(0.9**i for i in range(10)), rtol=1e-4)


def test_collapse_warning(caplog):
  caplog.set_level(logging.WARNING)
  assert monitors.warn_if_collapsing({"embedding_std_ratio": 0.05, "effective_rank": 1.2}, 0.2, step=100)
  assert "Possible collapse at step 100" in caplog.text
  assert not monitors.warn_if_collapsing({"embedding_std_ratio": 0.8}, 0.2, step=100)
  # Dimensional collapse (SwAV's failed CPU run): the std stays high but the rank is about 2.
  spread_std_low_rank = {"embedding_std_ratio": 0.7, "effective_rank": 2.0}
  assert not monitors.warn_if_collapsing(spread_std_low_rank, 0.2, step=200)
  assert monitors.warn_if_collapsing(spread_std_low_rank, 0.2, step=200, min_rank=3.0)
  assert "Possible collapse at step 200" in caplog.text
  assert not monitors.warn_if_collapsing({"embedding_std_ratio": 0.7, "effective_rank": 6.4}, 0.2, step=300, min_rank=3.0)
  # Steps where the rank was not computed (NaN) never warn on the rank.
  assert not monitors.warn_if_collapsing({"embedding_std_ratio": 0.7, "effective_rank": float("nan")}, 0.2, step=301,
                                      min_rank=3.0)


def test_collapse_metrics_on_a_collapsed_and_a_spread_batch():
  config, _ = load_config("byol")
  setup = build_setup(config, 256, mesh=parallel.make_mesh(jax.devices()[:1]))
  from jax.sharding import PartitionSpec as P

  fn = jax.jit(jax.shard_map(lambda z: collapse_metrics(z, jnp.int32(1), setup), mesh=setup.mesh,
                             in_specs=P(parallel.DATA_AXIS), out_specs=P()))
  spread = fn(jnp.asarray(np.random.default_rng(0).normal(size=(64, 16)), jnp.float32))
  collapsed = fn(jnp.ones((64, 16)) + 1e-4 * jnp.asarray(np.random.default_rng(1).normal(size=(64, 16))))
  assert float(spread["embedding_std_ratio"]) > 0.8 and float(spread["effective_rank"]) > 10
  assert float(collapsed["embedding_std_ratio"]) < 0.05 and float(collapsed["effective_rank"]) < 2


def test_every_preset_builds_and_config_mistakes_are_clear():
  for name in METHODS:
    _, module = load_config(name)
    for preset in module.PRESETS:
      config = module.get_config(preset)
      assert config.method == name
      # Exemplar presets are sized to their seed images (each one a class), the others to CIFAR-10.
      num_train = config.exemplar.num_exemplars if name == "exemplar" else 50000
      build_setup(config, num_train, mesh=parallel.make_mesh(jax.devices()[:8]))
  config, _ = load_config("moco_v2", **{"moco_v2.queue_size": 100})
  with pytest.raises(ValueError, match="multiple of the 32 keys enqueued per step"):
    build_setup(config, 256, mesh=parallel.make_mesh(jax.devices()[:1]))
  config, _ = load_config("byol", **{"augment.num_local_crops": 2})
  with pytest.raises(ValueError, match="num_local_crops=0"):
    build_setup(config, 256, mesh=parallel.make_mesh(jax.devices()[:1]))


def test_vit_pretraining_run_exports_a_usable_backbone(tmp_path):
  from sslax import load_pretrained

  config, _ = load_config("moco_v3", **{"model.backbone": "vit_test", "data.source": "synthetic", "data.synthetic.num_train_examples": 64,
                                        "total_steps": 2, "online_probe.enabled": False, "knn.at_end": False})
  summary = train.train_and_evaluate(config, str(tmp_path), mesh=parallel.make_mesh(jax.devices()[:2]))
  assert summary["step"] == 2
  backbone = load_pretrained(str(tmp_path))
  feats = backbone.features(random_batch(4)["image"], batch_size=4, mesh=parallel.make_mesh(jax.devices()[:1]))
  assert feats.shape == (4, 32) and np.isfinite(feats).all()


def _numpy_spherical_kmeans(x, init, iterations):
  c = x[init]
  for _ in range(iterations):
    assign = np.argmax(x @ c.T, axis=1)
    for j in range(len(c)):
      members = x[assign == j]
      if len(members):
        m = members.mean(axis=0)
        c[j] = m / np.linalg.norm(m)
  return c, np.argmax(x @ c.T, axis=1)


def test_deepcluster_kmeans_matches_numpy_and_is_the_same_on_eight_devices():
  config, _ = load_config("deepcluster_v2")
  from sslax.methods.deepcluster_v2 import DeepClusterV2

  method = DeepClusterV2(config, steps_per_epoch=2, num_examples=37)  # 37 rows: not a multiple of 8.
  state = method.init_state({}, jax.random.PRNGKey(3))
  step = jnp.int32(4)
  single = jax.device_get(method.cluster(state, step, None, 1))
  memory = np.asarray(state["memory"], np.float64)
  for h, k in enumerate(config.deepcluster_v2.num_prototypes):
    key = jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(config.seed), step), h)
    init = np.asarray(jax.random.choice(key, 37, (k,), replace=False))
    centroids, assign = _numpy_spherical_kmeans(memory[h % 2], init, config.deepcluster_v2.kmeans_iterations)
    np.testing.assert_allclose(single["centroids"][h, :k], centroids, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(single["assignments"][h], assign)
  from jax.sharding import PartitionSpec as P

  mesh = parallel.make_mesh(jax.devices()[:8])
  sharded = jax.jit(jax.shard_map(lambda s: method.cluster(s, step, parallel.DATA_AXIS, 8), mesh=mesh,
                                  in_specs=P(), out_specs=P()))(state)
  assert_trees_close(jax.device_get(sharded), single)


def test_deepcluster_end_to_end_fills_memory_and_clusters(tmp_path):
  config, _ = load_config("deepcluster_v2", **{"model.backbone": "vit_test", "data.source": "synthetic", "data.synthetic.num_train_examples": 64,
                                               "total_steps": 5, "knn.at_end": False})
  summary = train.train_and_evaluate(config, str(tmp_path), mesh=parallel.make_mesh(jax.devices()[:2]))
  assert summary["step"] == 5 and np.isfinite(summary["loss"])
  assert summary["assigned_fraction"] == 1.0  # Assignments from the filled memory, from the first step on.
