"""Pretraining loop: data-parallel SSL over a device mesh, with checkpoints and monitors.

`train_and_evaluate(config, workdir)` is the library entry point; `sslax.main` is a thin
command-line wrapper around it.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
import signal
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from jax.sharding import PartitionSpec as P

from sslax import augment, losses, parallel
from sslax.checkpoint import Checkpointer, abstract_with_shardings
from sslax.config_utils import resolve_steps, validate
from sslax.data import ImageDataset, load_dataset, train_batches
from sslax.methods import METHODS, get_method
from sslax.metrics import MetricWriter, Progress, plot_training_curves, quiet_library_logs
from sslax.models import BACKBONES, build_model
from sslax.optim import LR_SCALINGS, OPTIMIZERS, build_optimizer
from sslax.state import TrainState

CONFIG_CHOICES = {
    "method": tuple(METHODS),
    "model.backbone": BACKBONES,
    "model.stem": ("cifar", "imagenet"),
    "model.dtype": ("float32", "bfloat16"),
    "optimizer.name": OPTIMIZERS,
    "optimizer.lr_scaling": LR_SCALINGS,
    "data.source": ("tfds", "folder"),
}


class NonFiniteLossError(FloatingPointError):
  """Training diverged; the last good checkpoint is left as it was."""


# ----------------------------------------------------------------------------- set-up


@dataclasses.dataclass
class Setup:
  """What the loop needs besides the TrainState: built once from the config."""

  config: ml_collections.ConfigDict
  mesh: jax.sharding.Mesh
  model: Any
  method: Any
  tx: optax.GradientTransformation
  schedule: optax.Schedule
  total_steps: int
  warmup_steps: int
  steps_per_epoch: int
  num_classes: int = 0  # > 0: an online linear probe is trained on stop_gradient(features).
  probe_tx: optax.GradientTransformation | None = None


def build_setup(config: ml_collections.ConfigDict, num_train_examples: int,
                mesh: jax.sharding.Mesh | None = None, num_classes: int = 0, index_bound: int | None = None) -> Setup:
  """Validates the config and builds mesh, model, method and optimizer.

  Args:
    config: a config from configs/<method>.py.
    num_train_examples: size of the full training split (all processes), for epochs.
    mesh: device mesh (default: all devices).
    num_classes: label classes of the training data; with config.online_probe.enabled an
      online linear probe is trained (0: no labels, no probe).
    index_bound: 1 + the largest dataset index of a training example (default
      num_train_examples); sizes DeepCluster v2's memory.

  Returns:
    Setup.
  """
  validate(config, CONFIG_CHOICES)
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
  return Setup(config=config, mesh=mesh, model=build_model(config.model, bn_axis_name=parallel.DATA_AXIS),
               method=method, tx=tx, schedule=schedule, total_steps=total_steps,
               warmup_steps=warmup_steps, steps_per_epoch=steps_per_epoch, num_classes=num_classes if probe else 0,
               probe_tx=optax.adam(config.online_probe.learning_rate) if probe else None)


def _input_shape(config) -> tuple[int, int, int]:
  return (config.augment.crop_size, config.augment.crop_size, 3)


def create_train_state(setup: Setup, rng: jax.Array) -> TrainState:
  """Initialises the TrainState directly into its (replicated) shardings.

  The shapes come from `jax.eval_shape`, so nothing is materialised twice, and the
  jitted initialiser places the state on every device of the mesh.
  """
  model, method, tx = setup.model, setup.method, setup.tx
  dummy = jnp.zeros((2, *_input_shape(setup.config)), jnp.float32)

  def init(rng):
    model_rng, method_rng = jax.random.split(rng)
    variables = model.init(model_rng, dummy, train=False)
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


def normalize(images: jax.Array, mean, std) -> jax.Array:
  """(x - mean) / std per channel, for float images in [0, 1]."""
  return (images - jnp.asarray(mean, images.dtype)) / jnp.asarray(std, images.dtype)


# ----------------------------------------------------------------------------- step


def _augmented_views(setup: Setup, step: jax.Array, images: jax.Array) -> list[jax.Array]:
  """This device's normalised views (global, then local crops) of its rows of the batch."""
  config, axis = setup.config, parallel.DATA_AXIS
  n_local = images.shape[0]
  global_index = jax.lax.axis_index(axis) * n_local + jnp.arange(n_local)
  keys = augment.example_keys(config.seed, step, global_index)
  views = augment.multicrop_views(images, keys, config.augment, num_global=setup.method.num_views)
  dtype = jnp.dtype(config.model.dtype)
  return [normalize(v, config.data.mean, config.data.std).astype(dtype) for v in views]


def _local_loss_and_grads(setup: Setup, state: TrainState, batch: dict):
  """Per-device body: augment this device's rows, then the method's loss and its gradient.

  Per-example keys come from (seed, step, global example index), so the views do not
  depend on the device count. The method's loss gathers what it needs across devices with
  explicit collectives and returns the global-batch mean on every device; `jax.grad` then
  yields the exact global gradient (shard_map transposes the implicit broadcast of the
  replicated parameters into a sum over devices).

  Returns:
    ((loss, aux), grads), aux as documented in sslax/methods/__init__.py.
  """
  method, axis = setup.method, parallel.DATA_AXIS
  views = _augmented_views(setup, state.step, batch["image"])

  def loss_fn(params):
    return method.loss(setup.model, params, state.batch_stats, state.method_state, views, step=state.step,
                       axis_name=axis, batch=batch)

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
  """
  axis = parallel.DATA_AXIS
  std = losses.embedding_std(embeddings, axis)
  logged = ((step + 1) % setup.config.log_every_steps == 0) | (step + 1 == setup.total_steps)
  rank = jax.lax.cond(logged, lambda z: losses.effective_rank(z, axis), lambda z: jnp.float32(jnp.nan), embeddings)
  return {"embedding_std": std, "embedding_std_ratio": std * math.sqrt(embeddings.shape[-1]), "effective_rank": rank}


def _shard(setup: Setup, fn: Callable) -> Callable:
  # State replicated, batch split along the data axis, outputs replicated.
  return jax.shard_map(fn, mesh=setup.mesh, in_specs=(P(), P(parallel.DATA_AXIS)), out_specs=P())


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
    (loss, aux), grads = _local_loss_and_grads(setup, state, batch)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = dict(aux["metrics"], **collapse_metrics(aux["embeddings"], state.step, setup))
    probe = state.probe
    if setup.num_classes:
      probe, probe_metrics = _online_probe_update(setup, state.probe, aux["features"], batch["label"])
      metrics = dict(metrics, **probe_metrics)
    new_state = method.post_update(state.replace(step=state.step + 1, params=params, batch_stats=aux["batch_stats"],
                                                 opt_state=opt_state, method_state=aux["method_state"], probe=probe))
    metrics = dict(metrics, loss=loss, learning_rate=setup.schedule(state.step), grad_norm=optax.tree.norm(grads))
    if return_grads:
      metrics["grads"] = grads
    return new_state, metrics

  return jax.jit(_shard(setup, local_step), donate_argnums=(0,))


def fill_method_memory(setup: Setup, state: TrainState, batches) -> TrainState:
  """Before training, runs the method's forward-only `fill_memory` over `batches` (one epoch).

  DeepCluster v2 clusters a memory of every example's projection at the start of each
  epoch; this pass gives the first clustering the initial network's projections. Views use
  augmentation steps 2**30 + i, which training never reaches.
  """
  method = setup.method

  def local(state, batch):
    step = jnp.int32(2**30) + batch["fill_step"][0]
    views = _augmented_views(setup, step, batch["image"])[:method.num_views]
    method_state = method.fill_memory(setup.model, state.params, state.batch_stats, state.method_state, views,
                                      index=batch["index"], axis_name=parallel.DATA_AXIS)
    return state.replace(method_state=method_state)

  fill = jax.jit(_shard(setup, local), donate_argnums=(0,))
  for i, batch in enumerate(batches):
    n = batch["image"].shape[0]
    fill_step = parallel.to_global_batch({"fill_step": np.full((n // jax.process_count(),), i, np.int32)}, setup.mesh)
    state = fill(state, dict(batch, **fill_step))
  return state


# ----------------------------------------------------------------------------- evaluation


def make_feature_fn(setup: Setup, image_size: int | None = None) -> Callable:
  """Jitted `features(state, uint8_images) -> (B, D)` backbone features, evaluation mode.

  Args:
    setup: the run's Setup.
    image_size: resize (bilinear) the images to this size first; None keeps them.
  """
  config, model = setup.config, setup.model

  def features(state: TrainState, images: jax.Array) -> jax.Array:
    x = images.astype(jnp.float32) / 255.0
    if image_size is not None and image_size != x.shape[1]:
      x = jax.image.resize(x, (x.shape[0], image_size, image_size, 3), "bilinear", antialias=True)
    x = normalize(x, config.data.mean, config.data.std).astype(jnp.dtype(config.model.dtype))
    out = model.apply({"params": state.params, "batch_stats": state.batch_stats}, x, train=False)
    return out["features"]

  return jax.jit(features, out_shardings=parallel.batch_sharding(setup.mesh))


def extract_features(feature_fn: Callable, state: TrainState, images: np.ndarray, batch_size: int,
                     mesh: jax.sharding.Mesh) -> np.ndarray:
  """Features of every image, computed in global batches sharded over the mesh.

  Every process passes the same full `images`; each contributes its slice of every
  batch, and the features are gathered back to every process.

  Args:
    feature_fn: from make_feature_fn.
    state: the TrainState.
    images: uint8 (N, H, W, 3), identical on every process.
    batch_size: global batch; rounded up to a multiple of the device count.
    mesh: the mesh.

  Returns:
    float32 (N, D) numpy array.
  """
  num_devices, nproc, pid = mesh.devices.size, jax.process_count(), jax.process_index()
  batch_size = -(-batch_size // num_devices) * num_devices
  per_process = batch_size // nproc
  out = []
  for start in range(0, len(images), batch_size):
    chunk = images[start:start + batch_size]
    valid = len(chunk)
    if valid < batch_size:  # Pad the last batch so one compiled shape serves every batch.
      chunk = np.concatenate([chunk, np.zeros((batch_size - valid, *chunk.shape[1:]), chunk.dtype)])
    local = chunk[pid * per_process:(pid + 1) * per_process]
    feats = feature_fn(state, parallel.to_global_batch({"image": local}, mesh)["image"])
    if nproc > 1:
      from jax.experimental import multihost_utils

      feats = multihost_utils.process_allgather(feats, tiled=True)
    out.append(np.asarray(feats)[:valid])
  return np.concatenate(out).astype(np.float32)


class KNNMonitor:
  """Weighted kNN top-1 of the current backbone on the eval split (train split as memory)."""

  def __init__(self, setup: Setup, train_data: ImageDataset, test_data: ImageDataset):
    knn_cfg = setup.config.knn
    self.setup = setup
    limit = lambda d, n: (d.images, d.labels) if n is None else (d.images[:n], d.labels[:n])
    self.train_images, self.train_labels = limit(train_data, knn_cfg.max_train_examples)
    self.test_images, self.test_labels = limit(test_data, knn_cfg.max_test_examples)
    self.num_classes = max(train_data.num_classes, int(train_data.labels.max()) + 1)
    self.feature_fn = make_feature_fn(setup, knn_cfg.image_size)

  def __call__(self, state: TrainState) -> dict[str, float]:
    from sslax.evaluate.knn import knn_accuracy

    knn_cfg, mesh = self.setup.config.knn, self.setup.mesh
    start = time.time()
    train_f = extract_features(self.feature_fn, state, self.train_images, knn_cfg.batch_size, mesh)
    test_f = extract_features(self.feature_fn, state, self.test_images, knn_cfg.batch_size, mesh)
    acc = knn_accuracy(train_f, self.train_labels, test_f, self.test_labels, num_classes=self.num_classes,
                       k=knn_cfg.k, temperature=knn_cfg.temperature, chunk_size=knn_cfg.chunk_size)
    return {"knn_top1": float(acc[knn_cfg.k]), "knn_time_s": time.time() - start}


# ----------------------------------------------------------------------------- loop


class _StopSignal:
  """Turns SIGTERM/SIGINT into a flag the loop checks between steps (save, then exit)."""

  def __init__(self):
    self.received: int | None = None
    self._previous = {}

  def __enter__(self):
    for sig in (signal.SIGTERM, signal.SIGINT):
      try:
        self._previous[sig] = signal.signal(sig, self._handle)
      except ValueError:  # Not the main thread (e.g. a notebook worker): no handler.
        pass
    return self

  def _handle(self, signum, frame):
    del frame
    if self.received is not None and signum == signal.SIGINT:
      raise KeyboardInterrupt  # A second Ctrl-C stops at once.
    self.received = signum

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)


def _any_process(flag: bool) -> bool:
  if jax.process_count() == 1:
    return flag
  from jax.experimental import multihost_utils

  return bool(np.any(multihost_utils.process_allgather(np.array(flag))))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       mesh: jax.sharding.Mesh | None = None) -> dict[str, Any]:
  """Pretrains `config.method` and monitors it; resumes automatically from `workdir`.

  Args:
    config: a config from configs/<method>.py (validated here).
    workdir: directory for checkpoints, metrics.jsonl, TensorBoard events and config.json.
    mesh: device mesh (default: all devices of all processes).

  Returns:
    Summary dict: final 'step', 'stopped_by_signal', last metrics, final 'knn_top1' (if run).
  """
  os.makedirs(workdir, exist_ok=True)
  quiet_library_logs()
  pid, nproc = jax.process_index(), jax.process_count()
  # Validate the config before touching data or devices so mistakes fail fast.
  validate(config, CONFIG_CHOICES)
  train_data = load_dataset(config.data, config.data.train_split, process_index=pid, process_count=nproc)
  num_train = len(train_data) * nproc
  has_labels = bool(train_data.num_classes) or bool((train_data.labels >= 0).any())
  num_classes = max(train_data.num_classes, int(train_data.labels.max()) + 1) if has_labels else 0
  index_bound = int(train_data.indices.max()) + 1
  if nproc > 1:
    from jax.experimental import multihost_utils

    index_bound = int(np.max(multihost_utils.process_allgather(np.array(index_bound))))
  setup = build_setup(config, num_train, mesh, num_classes=num_classes, index_bound=index_bound)
  mesh = setup.mesh
  local_batch = config.batch_size // nproc
  logging.info("%s: %d devices in %d process(es), global batch %d, %d steps (%d/epoch, %.1f epochs).",
               config.method, mesh.devices.size, nproc, config.batch_size, setup.total_steps,
               setup.steps_per_epoch, setup.total_steps / setup.steps_per_epoch)
  if pid == 0:
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config.to_json_best_effort(indent=2))

  checkpointer = Checkpointer(workdir, max_to_keep=config.checkpoint.max_to_keep,
                              async_save=config.checkpoint.async_save)
  state = create_train_state(setup, jax.random.PRNGKey(config.seed))
  if checkpointer.latest_step() is not None:
    state = checkpointer.restore(abstract_with_shardings(state))
    logging.info("Resumed from checkpoint step %d in %s.", int(state.step), checkpointer.directory)
  start_step = int(state.step)

  knn_monitor = None
  if config.knn.every_steps or config.knn.at_end:
    if train_data.num_classes or (train_data.labels >= 0).any():
      full_train = train_data if nproc == 1 else load_dataset(config.data, config.data.train_split)
      knn_monitor = KNNMonitor(setup, full_train, load_dataset(config.data, config.data.eval_split))

  writer = MetricWriter(workdir, enabled=pid == 0)
  train_step = make_train_step(setup)
  keys = ("image",) + (("label",) if setup.num_classes else ()) + (("index",) if setup.method.needs_index else ())
  to_device = lambda batch: parallel.to_global_batch({k: batch[k] for k in keys}, mesh)
  if hasattr(setup.method, "fill_memory") and start_step == 0:
    t0 = time.time()
    fill_batches = train_batches(train_data, batch_size=local_batch, seed=config.seed, start_step=0, process_index=pid,
                                 to_device=lambda b: parallel.to_global_batch({k: b[k] for k in ("image", "index")},
                                                                              mesh))
    state = fill_method_memory(setup, state, (b for _, b in itertools.islice(fill_batches, setup.steps_per_epoch)))
    logging.info("Filled the %s memory with one forward pass over the data in %.1f s.", config.method,
                 time.time() - t0)
  batches = train_batches(train_data, batch_size=local_batch, seed=config.seed, start_step=start_step,
                          process_index=pid, to_device=to_device)
  progress = Progress(setup.total_steps, start_step)
  summary: dict[str, Any] = {"stopped_by_signal": False}
  last_metrics: dict[str, float] = {}
  train_time = _previous_train_time(workdir, start_step)

  def save(step_state: TrainState) -> None:
    checkpointer.save(step_state, int(step_state.step))

  with _StopSignal() as stop:
    step, compile_s = start_step, None
    if step < min(setup.total_steps, config.stop_at_step or setup.total_steps):
      t0 = time.time()
      _, first = next(batches)
      train_step = train_step.lower(state, first).compile()
      compile_s = time.time() - t0
      logging.info("Compiled the train step in %.1f s.", compile_s)
      batches = _chain([(step, first)], batches)
    # train_time counts wall-clock time in the loop (steps, input waits, checkpoint saves)
    # but not compilation or kNN evaluation, so "minutes of training" means the same
    # whatever the evaluation schedule.
    window_start, window_steps = time.time(), 0
    mark = time.time()
    stop_at = min(setup.total_steps, config.stop_at_step or setup.total_steps)
    for step, batch in batches:
      if step >= stop_at:
        break
      state, metrics = train_step(state, batch)
      loss = float(metrics["loss"])  # Host sync each step: divergence is caught before any save.
      train_time += time.time() - mark
      mark = time.time()
      window_steps += 1
      done = step + 1
      if not math.isfinite(loss):
        checkpointer.wait()
        raise NonFiniteLossError(
            f"Loss became {loss} at step {done}. Training stopped; the last good checkpoint "
            f"(step {checkpointer.latest_step()}) in {checkpointer.directory} is intact. Lower "
            f"--config.optimizer.base_learning_rate or lengthen the warm-up, then rerun (it resumes from there).")
      if done % config.log_every_steps == 0 or done == setup.total_steps:
        elapsed = time.time() - window_start
        last_metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
        last_metrics.update(images_per_sec=window_steps * config.batch_size / elapsed,
                            step_time_s=elapsed / window_steps, train_time_s=train_time,
                            epoch=done / setup.steps_per_epoch)
        if compile_s is not None:  # Reported once, with the first record of this run.
          last_metrics["compile_time_s"], compile_s = compile_s, None
        writer.write(done, last_metrics)
        progress.log(done, last_metrics)
        warn_if_collapsing(last_metrics, config.collapse_warning_fraction, done,
                           min_rank=config.collapse_warning_rank)
        window_start, window_steps = time.time(), 0
      if knn_monitor and config.knn.every_steps and done % config.knn.every_steps == 0 and done < setup.total_steps:
        train_time += time.time() - mark
        knn = knn_monitor(state)
        writer.write(done, dict(knn, train_time_s=train_time))
        logging.info("step %d  kNN top-1 %.4f (%.1f s)", done, knn["knn_top1"], knn["knn_time_s"])
        if pid == 0:
          plot_training_curves(workdir)
        mark = time.time()  # kNN time is neither training time nor training throughput.
        window_start, window_steps = mark, 0
      if done % config.checkpoint.every_steps == 0 or done == stop_at:
        save(state)
      train_time += time.time() - mark
      mark = time.time()
      if _any_process(stop.received is not None):
        save(state)
        logging.warning("Received signal %s: saved checkpoint step %d and stopped. Rerun the same command "
                        "to resume.", stop.received, done)
        summary["stopped_by_signal"] = True
        break
      if config.max_train_minutes and _any_process(train_time >= 60.0 * config.max_train_minutes):
        if done % config.checkpoint.every_steps and done != stop_at:
          save(state)
        logging.info("Reached max_train_minutes=%s at step %d (%.1f training minutes): saved and stopped.",
                     config.max_train_minutes, done, train_time / 60)
        summary["stopped_by_time_budget"] = True
        break

  final_step = int(state.step)
  if (knn_monitor and (final_step >= setup.total_steps or summary.get("stopped_by_time_budget"))
      and not summary["stopped_by_signal"] and config.knn.at_end):
    knn = knn_monitor(state)
    writer.write(final_step, dict(knn, train_time_s=train_time))
    logging.info("Final kNN top-1 %.4f at step %d.", knn["knn_top1"], final_step)
    if pid == 0:
      plot_training_curves(workdir)
    summary.update(knn)
  checkpointer.close()
  writer.close()
  summary.update(last_metrics, step=final_step, total_steps=setup.total_steps)
  if pid == 0 and not summary["stopped_by_signal"]:
    with open(os.path.join(workdir, "summary.json"), "w") as f:
      json.dump(summary, f, indent=2)
  return summary


def warn_if_collapsing(metrics: dict[str, float], fraction: float, step: int, min_rank: float = 0.0) -> bool:
  """Logs a warning when the embeddings look collapsed.

  Two signs are checked: the embedding std below `fraction` of its spread-out value
  1/sqrt(d) (complete collapse), and the effective rank below `min_rank` (dimensional
  collapse, where the std can stay high while the batch spans only a few directions).

  Args:
    metrics: one logged record (`embedding_std_ratio`, `effective_rank`).
    fraction: std-ratio threshold; 0 disables that check.
    step: the step, for the message.
    min_rank: effective-rank threshold; 0 disables that check.

  Returns:
    True when a warning was logged.
  """
  ratio = metrics.get("embedding_std_ratio")
  rank = metrics.get("effective_rank", float("nan"))
  low_std = ratio is not None and bool(fraction) and ratio < fraction
  low_rank = bool(min_rank) and math.isfinite(rank) and rank < min_rank
  if not (low_std or low_rank):
    return False
  logging.warning("Possible collapse at step %d: embedding std is %.3f x 1/sqrt(d) (warning below %.2f), "
                  "effective rank %.1f (warning below %.1f). Check the learning rate, the momentum/temperature "
                  "settings and the augmentations.", step, float("nan") if ratio is None else ratio, fraction,
                  rank, min_rank)
  return True


def _chain(first, rest):
  yield from first
  yield from rest


def _previous_train_time(workdir: str, start_step: int) -> float:
  """Training seconds logged up to `start_step` by an earlier (interrupted) run."""
  from sslax.metrics import read_metrics

  times = [r["train_time_s"] for r in read_metrics(workdir) if "train_time_s" in r and r["step"] <= start_step]
  return max(times, default=0.0)
