"""Contrastive Predictive Coding v2 (Henaff et al. 2020; Oord et al. 2018): predict the vectors
of the patches k rows below from a masked-convolution context over the rows above, contrasted
against every patch of the global batch."""
from __future__ import annotations

import zlib
from typing import Sequence

import jax
import jax.numpy as jnp

from sslax import losses, parallel
from sslax.augment.tiles import drop_colours
from sslax.config_utils import ConfigError, Field
from sslax.methods.base import LossOutput, Method
from sslax.methods.common import method_keys
from sslax.models.context import KIND as CONTEXT_KIND

SIMILARITIES = ("dot", "cosine")


def grid_size(image_size: int, patch_size: int, stride: int) -> int:
  """G, the patches per side of an `image_size` view cut into `patch_size` patches every `stride` pixels.

  Raises:
    ValueError: the patches do not tile the view exactly (naming the fields and what fits).
  """
  if patch_size > image_size or (image_size - patch_size) % stride:
    fits = sorted(p for p in range(1, image_size + 1) if (image_size - p) % stride == 0)
    near = sorted(sorted(fits, key=lambda p: abs(p - patch_size))[:3])
    raise ValueError(f"config.cpc.patch_size={patch_size} with config.cpc.stride={stride} does not tile a "
                     f"{image_size}x{image_size} view (config.augment.crop_size): crop_size - patch_size must be a "
                     f"multiple of the stride; with this stride use a patch size in {near}, or change the stride.")
  return (image_size - patch_size) // stride + 1


def overlapping_patches(images: jax.Array, patch_size: int, stride: int) -> jax.Array:
  """The G x G grid of (overlapping when stride < patch_size) square patches of each image.

  Args:
    images: (n, S, S, C).
    patch_size: p, the side of a patch.
    stride: pixels between the corners of neighbouring patches.

  Returns:
    (n, G, G, p, p, C); patch [i, j] is images[:, i * stride:i * stride + p, j * stride:j * stride + p].
  """
  g = grid_size(images.shape[1], patch_size, stride)
  index = jnp.arange(g)[:, None] * stride + jnp.arange(patch_size)[None, :]  # (G, p) pixel rows of each patch row
  rows = images[:, index]  # (n, G, p, S, C)
  patches = rows[:, :, :, index]  # (n, G, p, G, p, C)
  return jnp.transpose(patches, (0, 1, 3, 2, 4, 5))


def augment_patches(patches: jax.Array, keys: jax.Array, flip_prob: float, colour_drop_prob: float) -> jax.Array:
  """CPC v2's per-patch augmentation: random horizontal flips and colour dropping.

  Each patch is flipped left-right with probability `flip_prob` and colour-dropped (one
  random channel kept, the other two replaced by faint noise; sslax.augment.tiles.drop_colours)
  with probability `colour_drop_prob`, independently of the other patches of its image.

  Args:
    patches: (n, P, p, p, C) normalised patches.
    keys: (n, 2) per-example keys.
    flip_prob: probability of flipping a patch.
    colour_drop_prob: probability of colour-dropping a patch.

  Returns:
    (n, P, p, p, C) float32 patches.
  """

  def one(patches, key):
    k_flip, k_drop, k_colour = jax.random.split(key, 3)
    count = patches.shape[0]
    patches = patches.astype(jnp.float32)
    flip = jax.random.bernoulli(k_flip, flip_prob, (count,))
    patches = jnp.where(flip[:, None, None, None], patches[:, :, ::-1], patches)
    drop = jax.random.bernoulli(k_drop, colour_drop_prob, (count,))
    dropped = jax.vmap(drop_colours)(patches, jax.random.split(k_colour, count))
    return jnp.where(drop[:, None, None, None], dropped, patches)

  return jax.vmap(one)(patches, keys)


def cpc_info_nce(predictions: jax.Array, z: jax.Array, steps: Sequence[int], *, temperature: float = 1.0,
                 similarity: str = "dot", axis_name: str | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
  """CPC's InfoNCE over a grid, negatives from every patch of the global batch.

  Layout: the patch (b, r, c) of global example b has global index (b * G + r) * G + c among
  the N * G * G gathered vectors z. The query (b, s, i, j), i.e. predictions[b, s, i, j] for
  step k = steps[s] and a row i < G - k, scores every gathered z; its positive is the column
  of (b, i + k, j), and every other column (the other patches of the same image, the query's
  own position included, and all patches of every other image on every device) is a negative.
  The loss is the cross-entropy averaged over all N * sum_k G * (G - k) queries of the global
  batch; the gather is differentiated exactly (sslax.parallel.all_gather), as in NT-Xent.

  Args:
    predictions: (n_local, K, G, G, d) W_k c of this device's images (rows i >= G - k unused).
    z: (n_local, G, G, d) the patch vectors (targets and negatives), gradient not stopped.
    steps: the K prediction offsets k >= 1, in the order of predictions' second axis.
    temperature: logits are similarity / temperature.
    similarity: 'dot' (the papers' unnormalised dot product) or 'cosine' (both sides
      L2-normalised first).
    axis_name: data axis, or None on one device.

  Returns:
    (loss, {'contrastive_top1'}): the global-batch mean, identical on every device, and the
    fraction of queries whose positive has the largest logit.
  """
  if similarity not in SIMILARITIES:
    raise ValueError(f"Unknown similarity {similarity!r}; valid choices: {', '.join(SIMILARITIES)}.")
  n, _, g, _, d = predictions.shape
  predictions, z = predictions.astype(jnp.float32), z.astype(jnp.float32)
  if similarity == "cosine":
    predictions, z = losses.l2_normalize(predictions), losses.l2_normalize(z)
  keys = parallel.all_gather(z.reshape(n * g * g, d), axis_name)  # (N * G * G, d), global patch order
  offset = parallel.device_offset(n, axis_name)
  total, correct = jnp.float32(0.0), jnp.float32(0.0)
  for s, k in enumerate(steps):
    queries = predictions[:, s, :g - k].reshape(-1, d)  # (n * (G - k) * G, d), rows b, i, j
    logits = queries @ keys.T / temperature
    b, i, j = jnp.meshgrid(jnp.arange(n), jnp.arange(g - k), jnp.arange(g), indexing="ij")
    labels = (((offset + b) * g + i + k) * g + j).reshape(-1)
    log_prob = jax.nn.log_softmax(logits, axis=-1)
    total -= jnp.sum(jnp.take_along_axis(log_prob, labels[:, None], axis=1))
    correct += jnp.sum((jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32))
  count = parallel.global_count(n, axis_name) * sum(g * (g - k) for k in steps)
  loss = parallel.global_sum(total, axis_name) / count
  return loss, {"contrastive_top1": parallel.global_sum(correct, axis_name) / count}


class CPC(Method):
  """CPC v2: patch vectors predicted k rows ahead from a PixelCNN-style context, InfoNCE.

  One view per image (crop and flip from the usual pipeline) is cut into a G x G grid of
  overlapping patch_size patches every `stride` pixels (CPC's 7x7 grid of 64-pixel patches
  overlapping by 32 on ImageNet; 8-pixel patches every 4 on 32-pixel CIFAR crops). Each patch
  is flipped and colour-dropped on its own (`flip_prob`, `colour_drop_prob`; CPC v2's patch
  augmentation, keys from `method_keys`), then goes through the shared patch encoder (the
  backbone) and the projector to z[i, j] (B, G, G, d). The context network (the classifier
  slot: sslax.models.context.ContextPredictor, reading each image's G * G projections) gives
  c[i, j] from rows <= i and the predictions W_k c[i, j] of z[i + k, j] for k in `steps`;
  `cpc_info_nce` contrasts each with every patch vector of the global batch.

  Differences from CPC v2: the backbone's BatchNorm normalises over all patches of the batch
  (as the other patch methods do), where CPC v2 uses layer norm because batch statistics let
  patches below leak into the context; the ViT backbones use layer norm as CPC v2 does. The
  context network reads the projections z (the classifier slot's input), which are also the
  targets; CPC v2's reads the encoder's outputs and contrasts its predictions with a separate
  64-d linear projection of them. Predictions go top-down only (CPC v2 also predicts
  bottom-up and sideways). The loss averages over all (i, j, k) queries where CPC v2's
  pseudo-code sums the per-step means.

  Downstream, the backbone represents an image by the mean of its features over a 3x3 grid
  of patch-sized tiles (representation_tile_size); the online probe reads the mean of an
  image's patch features.
  """

  name = "cpc"
  heads = ("projector", "classifier")
  num_views = 1
  config_fields = {
      "patch_size": Field(8, "side of a patch in pixels (of config.augment.crop_size views)", ge=1, integer=True),
      "stride": Field(4, "pixels between neighbouring patches (< patch_size: they overlap)", ge=1, integer=True),
      "steps": Field((1, 2, 3), "predict the patch k rows below for each k; every k < the grid's side", ge=1,
                     integer=True),
      "similarity": Field("dot", "logit of a prediction and a patch vector", choices=SIMILARITIES),
      "temperature": Field(10.0, "logits = similarity / temperature (CPC v2 scales predictions by 0.1)", gt=0),
      "flip_prob": Field(0.5, "probability of flipping each patch left-right", ge=0, le=1),
      "colour_drop_prob": Field(1.0, "probability of colour dropping each patch", ge=0, le=1),
  }

  def __init__(self, config, **kwargs):
    super().__init__(config, **kwargs)
    self.grid = self.grid_side(config)
    self.classifier_group = self.grid**2  # The context network reads an image's G * G patch projections.

  @classmethod
  def grid_side(cls, config) -> int:
    """G, the patch grid's side at config.augment.crop_size."""
    return grid_size(config.augment.crop_size, config.cpc.patch_size, config.cpc.stride)

  @classmethod
  def representation_tile_size(cls, config) -> int:
    return config.cpc.patch_size

  @classmethod
  def validate_config(cls, config) -> None:
    super().validate_config(config)
    s, head = config.cpc, config.model.classifier
    if head.get("kind") != CONTEXT_KIND:
      raise ConfigError("cpc's classifier head is its context network: set config.model.classifier = "
                        "sslax.presets.context_head(width, depth, num_steps=len(config.cpc.steps)).")
    try:
      g = cls.grid_side(config)
    except ValueError as e:
      raise ConfigError(str(e)) from None
    steps = tuple(s.steps)
    if g < 2 or max(steps) >= g or len(set(steps)) != len(steps):
      raise ConfigError(f"config.cpc.steps={steps} must be distinct offsets below the grid's side G={g} "
                        f"(config.augment.crop_size={config.augment.crop_size}, patch_size={s.patch_size}, "
                        f"stride={s.stride}): each k predicts the patch k rows below, so k <= {g - 1}.")
    if head.num_steps != len(steps):
      raise ConfigError(f"config.model.classifier.num_steps={head.num_steps} must equal len(config.cpc.steps)="
                        f"{len(steps)}: the context head has one prediction matrix W_k per step.")
    if not config.model.backbone.startswith("resnet") and s.patch_size % config.model.patch_size:
      # ViTs take any input size (fixed sin-cos position embeddings) made of whole patches.
      raise ConfigError(f"config.cpc.patch_size={s.patch_size} must be a multiple of config.model.patch_size="
                        f"{config.model.patch_size} for a ViT backbone (or use a ResNet).")

  def loss(self, model, params, batch_stats, method_state, views, *, step, axis_name, batch=None):
    del batch
    images, s, g = views[0], self.settings, self.grid
    n, channels = images.shape[0], images.shape[-1]
    patches = overlapping_patches(images, s.patch_size, s.stride).reshape(n, g * g, s.patch_size, s.patch_size,
                                                                            channels)
    if s.flip_prob or s.colour_drop_prob:
      keys = method_keys(self.config, step, n, axis_name, stream=zlib.crc32(self.name.encode()))
      patches = augment_patches(patches, keys, s.flip_prob, s.colour_drop_prob).astype(images.dtype)
    # Every patch of the batch through the shared encoder at once (BatchNorm over all of them).
    x = patches.reshape(n * g * g, *patches.shape[2:])
    out, updates = model.apply({"params": params, "batch_stats": batch_stats}, x, train=True, predict=False,
                               pretext=True, mutable=["batch_stats"])
    z = out["projection"].reshape(n, g, g, -1)
    loss, metrics = cpc_info_nce(out["logits"], z, tuple(s.steps), temperature=float(s.temperature),
                                 similarity=s.similarity, axis_name=axis_name)
    features = out["features"].reshape(n, g * g, -1).mean(axis=1)
    return LossOutput(loss=loss, batch_stats=updates.get("batch_stats", batch_stats), method_state=method_state,
                      features=features, embeddings=out["projection"], metrics=metrics)
