"""Set-up and the pure, sharded train step: what is compiled, not the loop around it.

`build_setup` turns a config into mesh, model, method and optimizer; `create_train_state`
initialises the TrainState in its shardings; `make_train_step` returns the jitted, donated
`train_step(state, batch) -> (state, metrics)` that runs under `jax.shard_map` over the data
axis. sslax/train.py drives these in a loop.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Iterable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import PartitionSpec as P

from sslax import augment, monitors, parallel
from sslax.config_utils import resolve_steps, validate
from sslax.data.preprocessing import preprocess
from sslax.data.streaming import ON_CORRUPT
from sslax.data.tabular import TABLE_SOURCES
from sslax.methods import METHODS, Method, get_method
from sslax.models import BACKBONES, BN_IMPLS, CONV_IMPLS, INPUTS, build_model
from sslax.optim import LR_SCALINGS, OPTIMIZERS, build_optimizer
from sslax.state import TrainState

CONFIG_CHOICES = {
    "method": tuple(METHODS),
    "model.backbone": BACKBONES,
    "model.stem": ("cifar", "imagenet"),
    "model.dtype": ("float32", "bfloat16"),
    "model.input": INPUTS,
    "model.conv_impl": CONV_IMPLS,
    "model.bn_impl": BN_IMPLS,
    "optimizer.name": OPTIMIZERS,
    "optimizer.lr_scaling": LR_SCALINGS,
    "data.source": ("tfds", "folder", "synthetic") + TABLE_SOURCES,
    "data.on_corrupt": ON_CORRUPT,
}

# Augmentation steps of a forward-only pass over the data before training (Method.before_training)
# start here, a step number training never reaches, so those views differ from every training view.
_FORWARD_PASS_STEP = 2**30


@dataclasses.dataclass
class Setup:
  """What the step and the loop need besides the TrainState: built once from the config."""

  config: ml_collections.ConfigDict
  mesh: jax.sharding.Mesh
  model: Any
  method: Method
  tx: optax.GradientTransformation
  schedule: optax.Schedule
  total_steps: int
  warmup_steps: int
  steps_per_epoch: int
  num_classes: int = 0  # > 0: an online linear probe is trained on stop_gradient(features).
  probe_tx: optax.GradientTransformation | None = None
  input_shapes: dict | None = None  # Per-row shapes of a table's inputs; None for images.


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Checks the named choices and the method's own section and heads (clear ConfigErrors)."""
  validate(config, CONFIG_CHOICES)
  METHODS[config.method].validate_config(config)


def build_setup(config: ml_collections.ConfigDict, num_train_examples: int,
                mesh: jax.sharding.Mesh | None = None, num_classes: int = 0, index_bound: int | None = None,
                input_shapes: dict | None = None) -> Setup:
  """Validates the config and builds mesh, model, method and optimizer.

  Args:
    config: a config from configs/<method>.py.
    num_train_examples: size of the full training split (all processes), for epochs.
    mesh: device mesh (default: all devices).
    num_classes: label classes of the training data; with config.online_probe.enabled an
      online linear probe is trained (0: no labels, no probe).
    index_bound: 1 + the largest dataset index of a training example (default
      num_train_examples); sizes memory banks (DeepCluster v2).
    input_shapes: for tables, the per-row shapes of {'numeric', 'categorical'}
      (TableDataset.input_shapes), from which the encoder is initialised.

  Returns:
    Setup.
  """
  validate_config(config)
  mesh = parallel.make_mesh() if mesh is None else mesh
  parallel.check_batch_size(config.batch_size, mesh)
  steps_per_epoch = max(1, num_train_examples // config.batch_size)
  total_steps = resolve_steps(config, "total", steps_per_epoch)
  warmup_steps = resolve_steps(config, "warmup", steps_per_epoch)
  tx, schedule = build_optimizer(config.optimizer, batch_size=config.batch_size, total_steps=total_steps,
                                 warmup_steps=warmup_steps)
  probe = config.online_probe.enabled and num_classes > 0
  method = get_method(config, total_steps=total_steps, steps_per_epoch=steps_per_epoch,
                      num_examples=num_train_examples if index_bound is None else index_bound)
  model = build_model(config.model, heads=method.heads, bn_axis_name=parallel.DATA_AXIS,
                      normalization=(config.data.mean, config.data.std),
                      classifier_group=method.classifier_group)
  return Setup(config=config, mesh=mesh, model=model, method=method, tx=tx, schedule=schedule,
               total_steps=total_steps, warmup_steps=warmup_steps, steps_per_epoch=steps_per_epoch,
               num_classes=num_classes if probe else 0,
               probe_tx=optax.adam(config.online_probe.learning_rate) if probe else None,
               input_shapes=input_shapes)


def example_input(setup: Setup, batch: int) -> Any:
  """Zeros shaped like `batch` rows of the model's input (images, or a table's columns)."""
  if setup.input_shapes:
    from sslax.data.tabular import TABLE_DTYPES, TABLE_KEYS

    return {k: jnp.zeros((batch, *setup.input_shapes[k]), TABLE_DTYPES[k]) for k in TABLE_KEYS}
  size = setup.config.augment.crop_size
  return jnp.zeros((batch, size, size, 3), jnp.float32)


def create_train_state(setup: Setup, rng: jax.Array) -> TrainState:
  """Initialises the TrainState directly into its (replicated) shardings.

  The shapes come from `jax.eval_shape`, so nothing is materialised twice, and the
  jitted initialiser places the state on every device of the mesh.
  """
  model, method, tx = setup.model, setup.method, setup.tx
  dummy = example_input(setup, model.init_batch_size)

  def init(rng):
    model_rng, method_rng = jax.random.split(rng)
    variables = model.init(model_rng, dummy, train=False, pretext=True)
    params = variables["params"]
    probe = {}
    if setup.num_classes:
      dim = model.apply(variables, dummy, train=False)["features"].shape[-1]
      probe_params = {"w": jnp.zeros((dim, setup.num_classes)), "b": jnp.zeros((setup.num_classes,))}
      probe = {"params": probe_params, "opt_state": setup.probe_tx.init(probe_params)}
    # BN-free models (a ViT with BN-free heads) have no batch_stats collection.
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=variables.get("batch_stats", {}),
                      opt_state=tx.init(params), method_state=method.init_state(params, method_rng), probe=probe)

  abstract = jax.eval_shape(init, rng)
  shardings = jax.tree.map(lambda _: parallel.replicated(setup.mesh), abstract)
  return jax.jit(init, out_shardings=shardings)(rng)


# ----------------------------------------------------------------------------- the step


def streamed_view_keys(setup: Setup) -> tuple[str, ...]:
  """Batch fields of the views a streaming input crops on the host ('view0'.., 'local0'..)."""
  from sslax.data.streaming import view_keys

  return view_keys(setup.method.num_views, setup.config.augment.get("num_local_crops", 0))


def augmented_views(setup: Setup, step: jax.Array, batch: dict) -> list[jax.Array]:
  """This device's normalised views (global, then local crops) of its rows of the batch.

  Per-example keys come from (seed, step, global example index), so the views do not
  depend on the device count. The batch holds either whole images ('image', in-memory
  input: cropped here) or views the streaming input already cropped with the same keys
  ('view0'.., 'local0'..: only flips and colour run here).
  """
  config, axis = setup.config, parallel.DATA_AXIS
  if setup.method.modality == "table":  # The method corrupts the rows itself (SCARF).
    return [{"numeric": batch["numeric"], "categorical": batch["categorical"]}]
  n_local = batch["index"].shape[0] if "index" in batch else batch["image"].shape[0]
  global_index = jax.lax.axis_index(axis) * n_local + jnp.arange(n_local)
  keys = augment.example_keys(config.seed, step, global_index)
  if "image" in batch:
    views = augment.multicrop_views(batch["image"], keys, config.augment, num_global=setup.method.num_views)
  else:
    crops = [batch[k] for k in streamed_view_keys(setup)]
    views = augment.precropped_views(crops, keys, config.augment, num_global=setup.method.num_views)
  return [preprocess(v, config.data.mean, config.data.std, dtype=config.model.dtype) for v in views]


def _local_loss_and_grads(setup: Setup, state: TrainState, batch: dict, with_grads: bool = True):
  """Per-device body: augment this device's rows, then the method's loss and its gradient.

  The method's loss gathers what it needs across devices with explicit collectives and
  returns the global-batch mean on every device; `jax.grad` then yields the exact global
  gradient (shard_map transposes the implicit broadcast of the replicated parameters into a
  sum over devices).

  Returns:
    ((loss, LossOutput), grads); with `with_grads=False`, (loss, LossOutput) alone.
  """
  views = augmented_views(setup, state.step, batch)

  def loss_fn(params):
    out = setup.method.loss(setup.model, params, state.batch_stats, state.method_state, views, step=state.step,
                            axis_name=parallel.DATA_AXIS, batch=batch)
    return out.loss, out

  if not with_grads:
    return loss_fn(state.params)
  return jax.value_and_grad(loss_fn, has_aux=True)(state.params)


def _online_probe_update(setup: Setup, probe: dict, features: jax.Array, labels: jax.Array) -> tuple[dict, dict]:
  """One Adam step of the online linear probe on this device's rows (global-batch mean loss).

  The probe sees `stop_gradient(features)` and has its own parameters and optimizer, so
  it never changes the encoder's update; examples labelled -1 are ignored.

  Returns:
    (new probe {'params', 'opt_state'}, {'online_probe_loss', 'online_probe_top1'}).
  """
  axis = parallel.DATA_AXIS
  features = jax.lax.stop_gradient(features).astype(jnp.float32)
  valid = labels >= 0
  n_valid = jnp.maximum(jax.lax.psum(valid.sum(), axis), 1)

  def loss_fn(p):
    logits = features @ p["w"] + p["b"]
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.maximum(labels, 0))
    return jax.lax.psum(jnp.sum(ce * valid), axis) / n_valid, logits

  (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(probe["params"])
  correct = jax.lax.psum(jnp.sum((jnp.argmax(logits, axis=-1) == labels) & valid), axis)
  updates, opt_state = setup.probe_tx.update(grads, probe["opt_state"], probe["params"])
  new_probe = {"params": optax.apply_updates(probe["params"], updates), "opt_state": opt_state}
  return new_probe, {"online_probe_loss": loss, "online_probe_top1": correct / n_valid}


def collapse_metrics(embeddings: jax.Array, step: jax.Array, setup: Setup) -> dict[str, jax.Array]:
  """Collapse monitors of the global batch of embeddings (inside the sharded step).

  'embedding_std': mean per-dimension std of the L2-normalised embeddings, and
  'embedding_std_ratio' = std * sqrt(d) (about 1 when spread over the sphere, 0 when
  collapsed, Chen & He 2021); 'effective_rank': RankMe (Garrido et al. 2023). The rank needs
  an eigendecomposition, so it is computed only on the steps that are logged (NaN otherwise).

  The Gram matrix's all-reduce (d x d) runs on every step, outside the `cond`: XLA-CPU runs a
  collective inside a conditional unordered with the step's other collectives, so two devices
  could enter the all-reduce and, say, the loss's all-gather in opposite orders and wait for
  each other until XLA aborts the process (seen on a 2-device CPU mesh: "Termination timeout
  for all reduce ... Expected 2 threads ... only 1 of them arrived").
  """
  axis = parallel.DATA_AXIS
  std = monitors.embedding_std(embeddings, axis)
  logged = ((step + 1) % setup.config.log_every_steps == 0) | (step + 1 == setup.total_steps)
  gram = monitors.gram_matrix(embeddings, axis)
  rank = jax.lax.cond(logged, monitors.rank_of_gram, lambda g: jnp.float32(jnp.nan), gram)
  return {"embedding_std": std, "embedding_std_ratio": std * math.sqrt(embeddings.shape[-1]), "effective_rank": rank}


def _shard(setup: Setup, fn: Callable) -> Callable:
  # State replicated, batch split along the data axis, outputs replicated.
  return jax.shard_map(fn, mesh=setup.mesh, in_specs=(P(), P(parallel.DATA_AXIS)), out_specs=P())


def make_loss_fn(setup: Setup) -> Callable[[TrainState, dict], jax.Array]:
  """Jitted `(state, batch) -> loss`: the train step's augmentation and forward pass alone."""

  def fn(state, batch):
    return _local_loss_and_grads(setup, state, batch, with_grads=False)[0]

  return jax.jit(_shard(setup, fn))


def make_grad_fn(setup: Setup) -> Callable[[TrainState, dict], tuple[jax.Array, Any]]:
  """Jitted `(state, batch) -> (loss, grads)`, the gradient the train step applies."""

  def fn(state, batch):
    (loss, _), grads = _local_loss_and_grads(setup, state, batch)
    return loss, grads

  return jax.jit(_shard(setup, fn))


def make_train_step(setup: Setup, return_grads: bool = False) -> Callable[[TrainState, dict], tuple[TrainState, dict]]:
  """The jitted, donated, pure update `train_step(state, batch) -> (state, metrics)`.

  Runs under `jax.shard_map` over the data axis (see `_local_loss_and_grads`); the
  optimizer update and the method's post-update run replicated on every device.

  Args:
    setup: the run's Setup.
    return_grads: also return the gradient that was applied, as metrics['grads'] (for
      debugging and for the device-count equivalence tests).
  """
  tx, method = setup.tx, setup.method

  def local_step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
    (loss, out), grads = _local_loss_and_grads(setup, state, batch)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = dict(out.metrics, **collapse_metrics(out.embeddings, state.step, setup))
    probe = state.probe
    if setup.num_classes:
      probe, probe_metrics = _online_probe_update(setup, state.probe, out.features, batch["label"])
      metrics = dict(metrics, **probe_metrics)
    new_state = method.post_update(state.replace(step=state.step + 1, params=params, batch_stats=out.batch_stats,
                                                 opt_state=opt_state, method_state=out.method_state, probe=probe))
    metrics = dict(metrics, loss=loss, learning_rate=setup.schedule(state.step), grad_norm=optax.tree.norm(grads))
    if return_grads:
      metrics["grads"] = grads
    return new_state, metrics

  return jax.jit(_shard(setup, local_step), donate_argnums=(0,))


def batch_keys(setup: Setup, streaming: bool = False) -> tuple[str, ...]:
  """The batch fields the step reads: images (or streamed views and their indices), labels for
  the online probe, indices if the method needs them."""
  label = ("label",) if setup.num_classes or setup.method.needs_label else ()
  if setup.method.modality == "table":
    from sslax.data.tabular import DONOR_KEYS, TABLE_KEYS

    return TABLE_KEYS + DONOR_KEYS + ("index",) + label
  images = streamed_view_keys(setup) + ("index",) if streaming else ("image",)
  index = ("index",) if setup.method.needs_index and not streaming else ()
  caption = ("caption",) if setup.method.needs_caption else ()
  return images + label + index + caption


def make_forward_pass(setup: Setup, state: TrainState, batches: Iterable[dict]) -> Callable[[Callable], TrainState]:
  """The `forward_pass` that a method's `before_training` hook receives (sslax.methods.base).

  Args:
    setup: the run's Setup.
    state: the TrainState the pass starts from.
    batches: global batches ('image', 'index') of one epoch; read only if the hook calls it.

  Returns:
    `forward_pass(fn, max_batches=None)`: runs `fn(model, params, batch_stats, method_state,
    views, *, index, axis_name) -> method_state` under shard_map on every batch (or the first
    `max_batches`; views of augmentation step 2**30 + i, which training never reaches) and
    returns `state` with the final method_state.
  """
  method = setup.method

  def forward_pass(fn: Callable, max_batches: int | None = None) -> TrainState:
    def local(state, batch):
      step = jnp.int32(_FORWARD_PASS_STEP) + batch["pass_step"][0]
      views = augmented_views(setup, step, batch)[:method.num_views]
      method_state = fn(setup.model, state.params, state.batch_stats, state.method_state, views,
                        index=batch["index"], axis_name=parallel.DATA_AXIS)
      return state.replace(method_state=method_state)

    run = jax.jit(_shard(setup, local), donate_argnums=(0,))
    new_state = state
    for i, batch in enumerate(batches):
      if max_batches is not None and i >= max_batches:
        break
      n = batch["index"].shape[0] // jax.process_count()
      pass_step = parallel.to_global_batch({"pass_step": np.full((n,), i, np.int32)}, setup.mesh)
      new_state = run(new_state, dict(batch, **pass_step))
    return new_state

  return forward_pass
