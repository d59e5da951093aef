"""Pieces shared by the methods: multi-view forward passes, EMA targets, schedules, per-example
keys, and the method shapes several methods take (TwoViewMethod, MomentumTargetMethod,
TileClassificationMethod)."""
from __future__ import annotations

import math
import zlib
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import optax

from sslax import augment, parallel
from sslax.augment.tiles import check_tile_geometry, grid_tiles
from sslax.config_utils import ConfigError
from sslax.methods.base import LossOutput, Method

# Parameter groups a momentum target network copies from the online one (never the predictor).
TARGET_MODULES = ("backbone", "projector", "prototypes")


def multi_view_forward(model, params, batch_stats, views: Sequence[jax.Array], *, predict: bool = True,
                       train: bool = True) -> tuple[list[dict[str, jax.Array]], Any]:
  """Every view through the model; consecutive views of one resolution go as one batch.

  One batch per resolution gives BatchNorm the statistics of all those views together
  (global over devices through the model's bn_axis_name), as SimCLR's and BYOL's code
  do, and lets multi-crop feed 2 global and N smaller local crops (DINO's MultiCropWrapper).

  Args:
    model: the SSLModel.
    params: its params (online, or a target's subset with predict=False).
    batch_stats: BatchNorm statistics ({} for BN-free models).
    views: list of (n_local, H_v, W_v, 3) normalised images (or pytrees of (n_local, ...)
      arrays: a table's {'numeric', 'categorical'} rows).
    predict: run the predictor head.
    train: batch statistics in BatchNorm.

  Returns:
    (per-view output dicts as returned by the model, updated batch_stats).
  """
  outputs: list[dict[str, jax.Array]] = []
  shape = lambda v: jax.tree.map(jnp.shape, v)  # noqa: E731  (views may be pytrees: a table's rows)
  start = 0
  while start < len(views):
    end = start
    while end < len(views) and shape(views[end]) == shape(views[start]):
      end += 1
    batch = jax.tree.map(lambda *v: jnp.concatenate(v), *views[start:end])
    out, updates = model.apply({"params": params, "batch_stats": batch_stats}, batch,
                               train=train, predict=predict, mutable=["batch_stats"])
    batch_stats = updates.get("batch_stats", batch_stats)
    n = jax.tree.leaves(views[start])[0].shape[0]
    outputs += [jax.tree.map(lambda a, i=i: a[i * n:(i + 1) * n], out) for i in range(end - start)]
    start = end
  return outputs, batch_stats


def method_keys(config, step: jax.Array, n_local: int, axis_name: str | None, stream: int) -> jax.Array:
  """Per-example PRNG keys for a method's own randomness (tile jitter, permutations, masks).

  Derived like the views' keys from (seed, step, global example index), then folded with
  `stream`, so they are independent of the view keys and of the device count.

  Args:
    config: the run config (its seed).
    step: the training step (traced).
    n_local: rows on this device.
    axis_name: the batch's mesh axis (None on one device).
    stream: a constant that names the use (e.g. a method's own number).

  Returns:
    (n_local, 2) uint32 keys.
  """
  index = parallel.device_offset(n_local, axis_name) + jnp.arange(n_local)
  keys = augment.example_keys(config.seed, step, index)
  return jax.vmap(lambda k: jax.random.fold_in(k, stream))(keys)


def check_decoder_fits_crop(config) -> None:
  """The decoder's 2^num_upsamples upsampling must divide the crop size (a clear ConfigError)."""
  upsamples = config.model.decoder.num_upsamples
  if config.augment.crop_size % 2**upsamples:
    raise ConfigError(f"config.augment.crop_size={config.augment.crop_size} must be a multiple of {2**upsamples}: the "
                      f"decoder upsamples {upsamples} times (config.model.decoder.num_upsamples).")


def target_subset(params: dict) -> dict:
  """The parameter groups a momentum target copies (backbone, projector, prototypes)."""
  return {k: v for k, v in params.items() if k in TARGET_MODULES}


def copy_tree(tree: Any) -> Any:
  """A copy with its own buffers (a target must not alias the donated online params)."""
  return jax.tree.map(lambda x: x + jnp.zeros_like(x), tree)


def ema_update(target: Any, online: Any, momentum: jax.Array | float) -> Any:
  """target <- momentum * target + (1 - momentum) * online, as a pure tree map."""
  return optax.incremental_update(online, target, step_size=1.0 - momentum)


def cosine_momentum(step: jax.Array, total_steps: int, base: float, final: float = 1.0) -> jax.Array:
  """BYOL's schedule: base at step 0, rising along a half cosine to `final` at total_steps.

  tau(k) = final - (final - base) * (cos(pi k / K) + 1) / 2.
  """
  progress = jnp.minimum(step.astype(jnp.float32) / max(total_steps, 1), 1.0)
  return final - (final - base) * (jnp.cos(math.pi * progress) + 1.0) / 2.0


class TwoViewMethod(Method):
  """A stateless method whose loss compares the projections of two views (SimCLR, Barlow
  Twins, VICReg). Subclasses implement `pair_loss(z1, z2, axis_name) -> (loss, metrics)`."""

  def pair_loss(self, z1, z2, axis_name):
    raise NotImplementedError

  def loss(self, model, params, batch_stats, method_state, views: Sequence[jax.Array], *, step,
           axis_name: str | None, batch=None) -> LossOutput:
    """`pair_loss` of the two views' projections (see Method.loss)."""
    del step, batch
    outputs, new_stats = multi_view_forward(model, params, batch_stats, views)
    loss, metrics = self.pair_loss(outputs[0]["projection"], outputs[1]["projection"], axis_name)
    return projection_output(loss, outputs, new_stats, method_state, metrics)


class MomentumTargetMethod(Method):
  """A method with an EMA target network kept in method_state['target_params'].

  The target starts as a copy of the online backbone/projector(/prototypes) and after each
  optimizer step moves towards them with momentum tau from `momentum_schedule`; it is only
  ever read under stop_gradient, so no gradient reaches it.
  """

  base_momentum = 0.99
  final_momentum = 1.0  # Equal to base_momentum: constant momentum (MoCo v2).

  def init_state(self, params: Any, rng: jax.Array) -> dict:
    del rng
    return {"target_params": copy_tree(target_subset(params))}

  def momentum(self, step: jax.Array) -> jax.Array:
    """tau for the update that follows optimizer step `step` (0-based)."""
    return cosine_momentum(step, self.total_steps, self.base_momentum, self.final_momentum)

  def target_forward(self, model, method_state, batch_stats, views):
    """Target outputs (gradient stopped) of `views`; the target's BN statistics are discarded
    (only the online network is evaluated)."""
    outs, _ = multi_view_forward(model, method_state["target_params"], batch_stats, views, predict=False)
    return jax.lax.stop_gradient(outs)

  def post_update(self, state):
    tau = self.momentum(state.step - 1)  # state.step already counts the update just applied.
    target = ema_update(state.method_state["target_params"], target_subset(state.params), tau)
    return state.replace(method_state=dict(state.method_state, target_params=target))


def classification_loss(logits: jax.Array, labels: jax.Array, axis_name: str | None) -> tuple[jax.Array, jax.Array]:
  """Global-batch mean cross-entropy and top-1 accuracy of pretext-task logits.

  Args:
    logits: (n_local, C) logits.
    labels: (n_local,) int labels.
    axis_name: the batch's mesh axis.

  Returns:
    (loss, top1), identical on every device.
  """
  logits = logits.astype(jnp.float32)
  loss = parallel.global_mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels), axis_name)
  top1 = parallel.global_mean((jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32), axis_name)
  return loss, top1


def projection_output(loss: jax.Array, outputs: Sequence[dict[str, jax.Array]], batch_stats, method_state,
                      metrics: dict | None = None, num_views: int | None = None) -> LossOutput:
  """The usual LossOutput: first view's features for the probe, the projections of the first
  `num_views` views (default all) for the collapse monitors."""
  return LossOutput(loss=loss, batch_stats=batch_stats, method_state=method_state, features=outputs[0]["features"],
                    embeddings=jnp.concatenate([o["projection"] for o in outputs[:num_views]]),
                    metrics=metrics or {})


def freeze_prototypes(params: dict, frozen: jax.Array) -> dict:
  """params with no gradient into params['prototypes'] while `frozen` (a traced bool).

  SwAV freezes its prototypes and DINO its last layer during the first epoch; the forward
  is unchanged, only the gradient is cut (jnp.where routes it to the stopped branch).
  """
  if "prototypes" not in params:
    return params
  stopped = jax.tree.map(lambda w: jnp.where(frozen, jax.lax.stop_gradient(w), w), params["prototypes"])
  return dict(params, prototypes=stopped)


def check_tile_config(config, section: str) -> None:
  """`config.<section>.tile_size` fits the 3x3 grid of the crop and, for a ViT, whole patches.

  Raises:
    ConfigError: naming the field and what to set.
  """
  tile_size = config[section].tile_size
  if not config.model.backbone.startswith("resnet") and tile_size % config.model.patch_size:
    # ViTs take any input size (fixed sin-cos position embeddings) made of whole patches.
    raise ConfigError(f"config.{section}.tile_size={tile_size} must be a multiple of config.model.patch_size="
                      f"{config.model.patch_size} for a ViT backbone (or use a ResNet).")
  try:
    check_tile_geometry(config.augment.crop_size, tile_size, f"config.{section}")
  except ValueError as e:
    raise ConfigError(str(e)) from None


class TileClassificationMethod(Method):
  """A pretext classification over a group of tiles of each image (jigsaw, relative patch).

  One view per image (crop and flip from the usual pipeline) is cut into a 3x3 grid of
  jittered tiles (sslax.augment.tiles.grid_tiles); `make_inputs` picks and orders
  `classifier_group` of them per image and gives the label. Every tile goes through the
  shared encoder (backbone and projector, BatchNorm over all tiles of the batch), and the
  classifier head reads each image's concatenated tile projections. The representation
  evaluated downstream is the backbone's pooled feature of a whole image; the online probe
  reads the mean of an image's tile features (it costs no extra forward pass).

  Subclasses set `name`, `classifier_group`, `config_fields` (with `tile_size` and
  `channel_jitter`) and implement `num_classes` and `make_inputs`; a task whose tiles feed
  several classifier rows (relative patch location's shared centre) also overrides
  `classifier_rows`.
  """

  heads = ("projector", "classifier")
  num_views = 1

  @classmethod
  def num_classes(cls, config) -> int:
    """Classes of the pretext task (the classifier's output_dim)."""
    raise NotImplementedError

  @classmethod
  def representation_tile_size(cls, config) -> int:
    return config[cls.name].tile_size

  @classmethod
  def validate_config(cls, config) -> None:
    super().validate_config(config)
    check_tile_config(config, cls.name)
    if config.model.classifier.output_dim != cls.num_classes(config):
      raise ConfigError(f"{cls.name} has {cls.num_classes(config)} classes: set config.model.classifier.output_dim="
                        f"{cls.num_classes(config)} (got {config.model.classifier.output_dim}).")

  def make_inputs(self, tiles: jax.Array, keys: jax.Array, method_state) -> tuple[jax.Array, jax.Array]:
    """Per image: the classifier's ordered tiles and the label.

    Args:
      tiles: (n, 9, t, t, C) grid tiles, row-major.
      keys: (n, 2) per-example keys for the task's own choices.
      method_state: TrainState.method_state.

    Returns:
      ((n, g, t', t', C) inputs, (n,) or (n, r) int32 labels): g = classifier_group
      tiles per image and one label, or with `classifier_rows` the image's g tiles and
      the labels of its r classifier rows.
    """
    raise NotImplementedError

  def classifier_rows(self, n: int) -> jax.Array | None:
    """(n * r, classifier_group) indices of the tiles each classifier row reads, image by
    image; None (the default): each image's classifier_group tiles make one row."""
    del n
    return None

  def loss(self, model, params, batch_stats, method_state, views, *, step, axis_name, batch=None):
    del batch
    images = views[0]
    n = images.shape[0]
    keys = method_keys(self.config, step, n, axis_name, stream=zlib.crc32(self.name.encode()))
    tile_keys, task_keys = jnp.moveaxis(jax.vmap(jax.random.split)(keys), 1, 0)
    tiles = jax.vmap(grid_tiles, in_axes=(0, 0, None, None))(images, tile_keys, self.settings.tile_size,
                                                             self.settings.channel_jitter)
    inputs, labels = self.make_inputs(tiles, task_keys, method_state)
    x = inputs.reshape(-1, *inputs.shape[2:]).astype(images.dtype)
    out, updates = model.apply({"params": params, "batch_stats": batch_stats}, x, train=True, predict=False,
                               pretext=True, classifier_rows=self.classifier_rows(n), mutable=["batch_stats"])
    loss, top1 = classification_loss(out["logits"], labels.reshape(-1), axis_name)
    features = out["features"].reshape(n, inputs.shape[1], -1).mean(axis=1)
    return LossOutput(loss=loss, batch_stats=updates.get("batch_stats", batch_stats), method_state=method_state,
                      features=features, embeddings=out["projection"], metrics={f"{self.name}_top1": top1})
