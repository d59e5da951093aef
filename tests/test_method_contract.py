"""The contract every registered method keeps (sslax/methods/base.py), checked for each one.

A new method gets these checks by being registered in sslax.methods:
- three consecutive train steps (after the method's `before_training` hook) on 8 devices
  equal the same steps on 1 device: loss, gradients, parameters, BatchNorm statistics,
  method state (EMA target, queue, centre, memory, assignments) and the online probe;
- no gradient reaches a target/teacher network (methods built on MomentumTargetMethod);
- a checkpoint round trip restores the same TrainState bit for bit;
- the config section is validated with errors that name the field.

The tiny ViT compiles several times faster than the ResNet on CPU, so every method runs on
it except SimCLR, which keeps the ResNet (global BatchNorm in the backbone). The heads have
BatchNorm either way. With 32 training examples and batch 16 an epoch is 2 steps, so the
third step crosses an epoch boundary (DeepCluster v2's k-means), and SwAV's tiny queue
(32 rows, 16 per step) is full after two steps and joins the Sinkhorn problem in the third.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P
from reference import TABLE_SHAPES, assert_trees_close, load_config, random_batch, random_table_batch

from sslax import parallel
from sslax.checkpoint import Checkpointer, abstract_with_shardings
from sslax.config_utils import ConfigError
from sslax.methods import METHODS
from sslax.methods.common import MomentumTargetMethod
from sslax.step import build_setup, create_train_state, make_forward_pass, make_train_step

NUM_EXAMPLES, INDEX_BOUND = 32, 40
# Tolerance (rtol, atol relative to each leaf's largest value) of the 8-vs-1-device comparison of
# gradients and state: float32 sums run in another order. Barlow Twins and VICReg standardise
# 16-row batches and sum d^2 correlation terms, which amplifies that rounding over three steps
# to up to 4e-4 of a leaf's scale; their losses still agree to 1e-5 at every step, and per-device
# statistics (the bug to catch) change the loss by over 1e-3 (test_redundancy_reduction.py).
# CLIP's text tower: the key part of the attention's qkv bias has an identically zero gradient
# (softmax is invariant to adding q.b to a query's logits), so its gradient is float32 rounding
# noise that differs between 8 and 1 devices, and AdamW normalises that noise into steps of
# +-lr; after three steps those entries differ by up to 3 lr (< 1e-4) while the gradients agree.
TOLERANCE = {"barlow_twins": (2e-3, 1e-3), "vicreg": (2e-3, 1e-3), "clip": (1e-4, 1e-4)}
# Methods whose train step is compiled at XLA's default optimisation level (3) instead of the suite's
# level 0 (tests/reference.py). At level 0, XLA-CPU's per-image reductions and small matrix
# products (the crop's resampling, the contrast jitter's mean) round differently for 2 and for
# 16 examples per device, so the views on 8 and on 1 device differ by up to 6e-7; in SimCLR's
# width-4 ResNet (ReLU everywhere) one pre-activation that close to zero then flips sides and
# moves an entry of the stem's kernel gradient by 1% at the third step. At the default level
# (every real run's) the views on 8 and on 1 device are bit for bit the same.
COMPILE_OPTIMISED = {"simclr"}


def _config(name):
  if METHODS[name].modality == "table":  # SCARF keeps its MLP encoder.
    config, _ = load_config(name, **{"warmup_steps": 0})
    return config
  backbone = "resnet18" if name == "simclr" else "vit_test"
  config, _ = load_config(name, **{"model.backbone": backbone, "warmup_steps": 0})
  return config


def _setup(name, n_devices):
  table = METHODS[name].modality == "table"
  return build_setup(_config(name), NUM_EXAMPLES, mesh=parallel.make_mesh(jax.devices()[:n_devices]), num_classes=10,
                     index_bound=INDEX_BOUND, input_shapes=TABLE_SHAPES if table else None)


def _batch(name, seed, index_bound=None):
  make = random_table_batch if METHODS[name].modality == "table" else random_batch
  return make(seed=seed, index_bound=index_bound)


@functools.lru_cache(maxsize=None)
def _three_steps(name, n_devices):
  """(initial params, per-step losses, grads, final state (device arrays), host copy of it) on n devices."""
  setup = _setup(name, n_devices)
  state = create_train_state(setup, jax.random.PRNGKey(0))
  initial = jax.device_get(state.params)
  pass_batches = [dict(_batch(name, seed=10 + i), index=np.arange(16 * i, 16 * i + 16, dtype=np.int32))
                  for i in range(2)]
  state = setup.method.before_training(
      state, make_forward_pass(setup, state, [parallel.to_global_batch(b, setup.mesh) for b in pass_batches]))
  step = make_train_step(setup, return_grads=True)
  batches = [parallel.to_global_batch(_batch(name, seed=s, index_bound=INDEX_BOUND), setup.mesh) for s in range(3)]
  if name in COMPILE_OPTIMISED:
    step = step.lower(state, batches[0]).compile(compiler_options={"xla_backend_optimization_level": 3})
  step_losses, grads = [], []
  for s in range(3):
    state, metrics = step(state, batches[s])
    step_losses.append(float(metrics["loss"]))
    grads.append(metrics["grads"])
  return initial, step_losses, jax.device_get(grads), state, jax.device_get(state)


# Under pytest-xdist (the README's test command), a method's contract tests share one worker,
# so the cached steps of _three_steps serve both the 8-vs-1 and the checkpoint test.
BY_METHOD = [pytest.param(name, marks=pytest.mark.xdist_group(f"contract_{name}")) for name in sorted(METHODS)]


@pytest.mark.parametrize("name", BY_METHOD)
def test_three_steps_on_eight_devices_equal_one_device(name):
  initial, losses1, grads1, _, state1 = _three_steps(name, 1)
  _, losses8, grads8, _, state8 = _three_steps(name, 8)
  assert np.isfinite(losses1).all()
  # The first step starts from the same parameters, so its loss agrees to float rounding. Later
  # steps start from parameters that differ by the rounding of the 8-device sums, which the
  # methods in TOLERANCE amplify (their gradients are compared at that looser tolerance too).
  np.testing.assert_allclose(losses8[0], losses1[0], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(losses8[1:], losses1[1:], rtol=1e-4 if name in TOLERANCE else 1e-5, atol=1e-6)
  rtol, atol_scale = TOLERANCE.get(name, (1e-4, 1e-5))
  assert_trees_close(grads8, grads1, rtol=rtol, atol_scale=atol_scale)
  assert_trees_close(state8.params, state1.params, rtol=rtol, atol_scale=atol_scale)
  for part in ("batch_stats", "method_state", "probe"):
    if jax.tree.leaves(getattr(state1, part)):
      assert_trees_close(getattr(state8, part), getattr(state1, part), rtol=rtol, atol_scale=atol_scale)
  assert int(state8.step) == int(state1.step) == 3
  # The steps really moved the parameters, so the comparison is not vacuous.
  moved = max(float(np.abs(a - b).max()) for a, b in zip(jax.tree.leaves(state1.params), jax.tree.leaves(initial)))
  assert moved > 1e-6


@pytest.mark.parametrize("name", BY_METHOD)
def test_checkpoint_round_trip_restores_the_same_state(name, tmp_path):
  *_, state, host = _three_steps(name, 8)
  with Checkpointer(str(tmp_path), async_save=False) as checkpointer:
    checkpointer.save(state, int(host.step))
    restored = checkpointer.restore(abstract_with_shardings(state))  # Shapes, dtypes and shardings only.
  for a, b in zip(jax.tree.leaves(jax.device_get(restored)), jax.tree.leaves(host), strict=True):
    np.testing.assert_array_equal(a, b)
  assert jax.tree.structure(restored) == jax.tree.structure(state)


@pytest.mark.parametrize("name", sorted(n for n, m in METHODS.items() if issubclass(m, MomentumTargetMethod)))
def test_no_gradient_reaches_the_target_network(name):
  setup = _setup(name, 1)
  state = create_train_state(setup, jax.random.PRNGKey(0))
  assert "target_params" in state.method_state
  n_views = setup.method.num_views
  views = [jnp.asarray(np.random.default_rng(v).normal(size=(16, 16, 16, 3)), jnp.float32) for v in range(n_views)]
  batch = {k: jnp.asarray(v) for k, v in random_batch(index_bound=INDEX_BOUND).items()}

  def grads(params, target):
    def loss(p, t):
      method_state = dict(state.method_state, target_params=t)
      return setup.method.loss(setup.model, p, state.batch_stats, method_state, views, step=state.step,
                               axis_name=parallel.DATA_AXIS, batch=batch).loss
    return jax.grad(loss, (0, 1))(params, target)

  g_online, g_target = jax.jit(jax.shard_map(grads, mesh=setup.mesh, in_specs=(P(), P()), out_specs=P()))(
      state.params, state.method_state["target_params"])
  assert all(float(jnp.abs(x).max()) == 0.0 for x in jax.tree.leaves(g_target))
  assert max(float(jnp.abs(x).max()) for x in jax.tree.leaves(g_online["backbone"])) > 0


@pytest.mark.parametrize("name", sorted(METHODS))
def test_config_section_and_heads_are_validated(name):
  cls = METHODS[name]
  config = _config(name)
  cls.validate_config(config)  # The shipped tiny preset is valid.
  for field_name, field in cls.config_fields.items():
    bad = _out_of_range(field)
    if bad is None:
      continue
    broken, _ = load_config(name, **{f"{name}.{field_name}": bad})
    with pytest.raises(ConfigError, match=rf"config\.{name}\.{field_name}="):
      cls.validate_config(broken)
  for head, override in (("predictor", {"model.predictor": None}), ("prototypes", {"model.num_prototypes": 0}),
                         ("classifier", {"model.classifier": None}), ("decoder", {"model.decoder": None})):
    if head in cls.heads:
      broken, _ = load_config(name, **override)
      with pytest.raises(ConfigError, match=f"needs a {head} head"):
        cls.validate_config(broken)


def _out_of_range(field):
  """A value the field must reject, or None when every number is valid."""
  if field.choices is not None:
    return None  # ConfigDict's type checks already reject other types; every choice is valid.
  for bound, delta in ((field.gt, 0.0), (field.ge, -1.0), (field.lt, 0.0), (field.le, 1.0)):
    if bound is not None:
      value = int(bound + delta) if field.integer else float(bound + delta)
      return (value,) * len(field.default) if isinstance(field.default, tuple) else value
  return None


def test_a_head_the_method_does_not_use_is_an_error():
  config, _ = load_config("simclr", **{"model.num_prototypes": 8})
  with pytest.raises(ConfigError, match=r"simclr has no prototypes head.*model\.num_prototypes"):
    METHODS["simclr"].validate_config(config)
