"""Fine-tuning the whole backbone plus a new linear head on (a fraction of) the labels.

Semi-supervised protocol of SimCLR (Chen et al. 2020, section 6): start from the
pretrained backbone, add a zero-initialised linear head, train everything with
cross-entropy on a class-balanced 1% / 10% / 100% subset of the training labels using
random crops and flips only, and report top-1/top-5 on the test split. The same
function trained from a random initialisation gives the "from scratch" baseline.

Data parallel like pretraining: the step runs under `shard_map` over the mesh's data
axis, BatchNorm statistics are global, and each example's augmentation key comes from
(seed, step, global index).
"""
from __future__ import annotations

import time
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from jax.sharding import PartitionSpec as P

from sslax import augment, parallel
from sslax.data import EpochSampler
from sslax.data.streaming import LazyImages
from sslax.evaluate.features import extract_features
from sslax.evaluate.linear import topk_accuracy
from sslax.evaluate.pretrained import Backbone
from sslax.models import build_backbone
from sslax.optim import build_optimizer


class Classifier(nn.Module):
  """Backbone + linear head (zero-initialised, as in SimCLR's fine-tuning)."""

  backbone: nn.Module
  num_classes: int

  @nn.compact
  def __call__(self, x, train: bool = True):
    features = self.backbone(x, train=train)
    return nn.Dense(self.num_classes, kernel_init=nn.initializers.zeros, name="head")(features)


def default_finetune_config() -> ml_collections.ConfigDict:
  """Fine-tuning settings (CPU-sized defaults; configs/eval.py sets the presets)."""
  c = ml_collections.ConfigDict()
  c.label_fractions = (0.01, 0.1)
  c.subset_seed = 0
  c.epochs = 30.0  # Over the labelled subset; steps = max(min_steps, epochs * subset / batch).
  c.min_steps = 200
  c.batch_size = 128
  c.image_size = 32  # Train crop and test resolution.
  c.crop_scale = (0.25, 1.0)
  c.optimizer = ml_collections.ConfigDict(dict(
      name="sgd", base_learning_rate=0.1, lr_scaling="linear", weight_decay=5e-4, momentum=0.9, nesterov=True,
      trust_coefficient=1e-3, b1=0.9, b2=0.999))
  c.warmup_fraction = 0.05
  c.eval_batch_size = 500
  # Train only the new head on frozen backbone features (BatchNorm in inference mode): the
  # augmented linear protocol of SimCLR/BYOL on ImageNet (random resized crops and flips).
  c.freeze_backbone = False
  c.fraction_epochs = ()  # Epochs per entry of label_fractions (empty: `epochs` for all).
  return c


def _augment_config(cfg) -> ml_collections.ConfigDict:
  a = augment.default_simclr_augment_config()
  a.crop_size = cfg.image_size
  a.crop_scale = tuple(cfg.crop_scale)
  a.color_jitter_prob = 0.0
  a.grayscale_prob = 0.0
  return a


def finetune(backbone: Backbone, train_images: np.ndarray, train_labels: np.ndarray, test_images: np.ndarray,
             test_labels: np.ndarray, *, num_classes: int, cfg: ml_collections.ConfigDict, seed: int = 0,
             mesh: jax.sharding.Mesh | None = None, log: Callable[[int, dict], None] | None = None,
             return_variables: bool = False) -> dict:
  """Fine-tunes `backbone` with a new head on the given (already subset) labelled images.

  Args:
    backbone: pretrained (or random-init) Backbone.
    train_images, train_labels: uint8 (N, H, W, 3) and int (N,) labelled training examples.
    test_images, test_labels: the test split.
    num_classes: classes of the head.
    cfg: see default_finetune_config.
    seed: seed of the head initialisation, sampling and augmentation.
    mesh: device mesh (default: all devices).
    log: optional callback(step, scalars) for the training loss.
    return_variables: also return the trained {'params', 'batch_stats'} as 'variables'.

  Returns:
    dict with 'top1', 'top5', 'steps', 'train_examples', 'time_s' (and 'variables').
  """
  start = time.time()
  mesh = parallel.make_mesh() if mesh is None else mesh
  n_dev = mesh.devices.size
  batch = min(cfg.batch_size, len(train_images) // n_dev * n_dev)
  if batch < n_dev:
    raise ValueError(f"{len(train_images)} labelled examples cannot fill one batch on {n_dev} devices.")
  steps = max(cfg.min_steps, int(round(cfg.epochs * len(train_images) / batch)))
  tx, _ = build_optimizer(cfg.optimizer, batch_size=batch, total_steps=steps,
                          warmup_steps=int(cfg.warmup_fraction * steps))
  model = Classifier(build_backbone(backbone.config.model, bn_axis_name=parallel.DATA_AXIS,
                                    normalization=(backbone.config.data.mean, backbone.config.data.std)), num_classes)
  eval_model = Classifier(backbone.module, num_classes)
  aug_cfg = _augment_config(cfg)

  head = nn.Dense(num_classes, kernel_init=nn.initializers.zeros).init(
      jax.random.PRNGKey(seed), jnp.zeros((1, _feature_dim(backbone))))["params"]
  params = {"backbone": backbone.variables["params"], "head": head}
  batch_stats = {"backbone": backbone.variables["batch_stats"]}
  if cfg.get("freeze_backbone", False):  # No update at all to the backbone (not even weight decay).
    tx = optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()},
                               lambda p: {"backbone": jax.tree.map(lambda _: "frozen", p["backbone"]),
                                          "head": jax.tree.map(lambda _: "train", p["head"])})
  state = parallel.replicate({"params": params, "batch_stats": batch_stats, "opt_state": tx.init(params),
                              "step": jnp.zeros((), jnp.int32)}, mesh)

  # A streaming training split (sslax.data.streaming) crops each example's view from its full
  # image on the host; in-memory images are cropped here, on the device.
  streamed = isinstance(train_images, LazyImages)
  frozen = cfg.get("freeze_backbone", False)

  def local_step(state, images, labels):
    n = images.shape[0]
    index = jax.lax.axis_index(parallel.DATA_AXIS) * n + jnp.arange(n)
    keys = augment.example_keys(seed, state["step"], index)
    if streamed:
      views = augment.precropped_views([images], keys, aug_cfg, num_global=1)[0]
    else:
      views = augment.simclr_views(images, keys, aug_cfg, num_views=1)[0]
    x = (views - jnp.asarray(backbone.config.data.mean)) / jnp.asarray(backbone.config.data.std)

    def loss_fn(params):
      if frozen:  # Gradients reach only the head; the backbone's BN uses its running statistics.
        params = dict(params, backbone=jax.lax.stop_gradient(params["backbone"]))
        logits = model.apply({"params": params, "batch_stats": state["batch_stats"]}, x, train=False)
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels).sum()
        return jax.lax.psum(ce, parallel.DATA_AXIS) / (n * jax.lax.axis_size(parallel.DATA_AXIS)), {}
      logits, updates = model.apply({"params": params, "batch_stats": state["batch_stats"]}, x, train=True,
                                    mutable=["batch_stats"])
      ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels).sum()
      return jax.lax.psum(ce, parallel.DATA_AXIS) / (n * jax.lax.axis_size(parallel.DATA_AXIS)), updates

    (loss, updates), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
    upd, opt_state = tx.update(grads, state["opt_state"], state["params"])
    return {"params": optax.apply_updates(state["params"], upd), "batch_stats": updates.get("batch_stats", state["batch_stats"]),
            "opt_state": opt_state, "step": state["step"] + 1}, loss

  train_step = jax.jit(jax.shard_map(local_step, mesh=mesh, in_specs=(P(), P(parallel.DATA_AXIS), P(parallel.DATA_AXIS)),
                                     out_specs=(P(), P())), donate_argnums=(0,))
  # Every process holds the labelled subset and passes its rows of each global batch.
  sampler = EpochSampler(len(train_images), batch, seed, jax.process_index(), jax.process_count())
  for step in range(steps):
    idx = sampler.indices(step)
    if streamed:
      rows0 = jax.process_index() * len(idx)
      box_fn = lambda rows, h, w, step=step: [augment.crop_boxes(  # noqa: E731
          seed, step, rows0 + rows, h, w, view=0, scale=aug_cfg.crop_scale, ratio=aug_cfg.crop_ratio)]
      (host_images,), host_labels = train_images.reader.random_crops(train_images.positions[idx], box_fn,
                                                                     [aug_cfg.crop_size])
    else:
      host_images, host_labels = train_images[idx], np.asarray(train_labels[idx], np.int32)
    images = parallel.to_global_batch(host_images, mesh)
    labels = parallel.to_global_batch(host_labels, mesh)
    state, loss = train_step(state, images, labels)
    if log is not None and ((step + 1) % 50 == 0 or step + 1 == steps):
      log(step + 1, {"finetune_loss": float(loss)})

  logits_fn = jax.jit(
      lambda v, x: eval_model.apply(v, backbone.preprocess(x, cfg.image_size), train=False),
      out_shardings=parallel.batch_sharding(mesh))
  variables = {"params": state["params"], "batch_stats": state["batch_stats"]}
  logits = extract_features(logits_fn, variables, test_images, cfg.eval_batch_size, mesh)
  acc = topk_accuracy(logits, np.asarray(test_labels), (1, 5))
  result = {"top1": acc[1], "top5": acc[5], "steps": steps, "train_examples": int(len(train_images)),
            "time_s": time.time() - start}
  logging.info("Fine-tuned %d steps on %d examples: top-1 %.4f, top-5 %.4f.", steps, len(train_images),
               acc[1], acc[5])
  if return_variables:
    result["variables"] = jax.device_get(variables)
  return result


def _feature_dim(backbone: Backbone) -> int:
  size = backbone.config.augment.crop_size
  shape = jax.eval_shape(lambda v: backbone.module.apply(v, jnp.zeros((1, size, size, 3)), train=False),
                         backbone.variables)
  return int(shape.shape[-1])
