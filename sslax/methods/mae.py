"""Masked autoencoders (He, Chen, Xie, Li, Dollar & Girshick 2022, "Masked Autoencoders Are Scalable
Vision Learners", CVPR): a ViT encodes a random quarter of the patches, a light decoder predicts
the pixels of the rest."""
from __future__ import annotations

import zlib

import jax
import jax.numpy as jnp

from sslax import parallel
from sslax.config_utils import ConfigError, Field
from sslax.methods.base import LossOutput, Method
from sslax.methods.common import method_keys
from sslax.models.vit import patchify, unpatchify

NORM_PIX_EPS = 1e-6  # MAE's models_mae.py forward_loss: (target - mean) / (var + 1e-6) ** .5.
_STREAM = zlib.crc32(b"mae")  # Names the masks' keys among a step's per-example keys.


def num_masked(num_patches: int, mask_ratio: float) -> int:
  """Patches hidden per image: round(mask_ratio * num_patches), the same for every image."""
  return int(round(mask_ratio * num_patches))


def random_masking(keys: jax.Array, num_patches: int, mask_ratio: float) -> tuple[jax.Array, jax.Array]:
  """Per-example random masks with exactly `num_masked` patches hidden (MAE's `random_masking`).

  Each example draws uniform noise per patch; the patches of the smallest noise stay
  visible (argsort, as the paper's code), so every subset of that size is equally likely.

  Args:
    keys: (n, 2) per-example keys.
    num_patches: L, patches per image.
    mask_ratio: fraction of the patches hidden.

  Returns:
    (keep_index, mask): int32 (n, L - M) indices of the visible patches (row-major patch
    order, in random order) and float32 (n, L) masks, 1 where a patch is hidden; M =
    num_masked(L, mask_ratio).
  """
  num_keep = num_patches - num_masked(num_patches, mask_ratio)
  noise = jax.vmap(lambda k: jax.random.uniform(k, (num_patches,)))(keys)
  keep_index = jnp.argsort(noise, axis=1)[:, :num_keep].astype(jnp.int32)
  mask = jax.vmap(lambda i: jnp.ones((num_patches,), jnp.float32).at[i].set(0.0))(keep_index)
  return keep_index, mask


def normalize_patches(patches: jax.Array, eps: float = NORM_PIX_EPS) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Each patch standardised by its own mean and variance (MAE's norm_pix_loss targets).

  The variance is the unbiased one (ddof=1), as torch's `Tensor.var` that the paper's
  code calls.

  Args:
    patches: (..., D) flattened patches.
    eps: added to the variance.

  Returns:
    (normalised patches, per-patch mean (..., 1), per-patch std sqrt(var + eps) (..., 1)).
  """
  patches = patches.astype(jnp.float32)
  mean = patches.mean(axis=-1, keepdims=True)
  std = jnp.sqrt(patches.var(axis=-1, keepdims=True, ddof=1) + eps)
  return (patches - mean) / std, mean, std


def masked_patch_loss(prediction: jax.Array, target: jax.Array, mask: jax.Array, axis_name: str | None) -> jax.Array:
  """Mean squared error per patch, averaged over the hidden patches of the global batch.

  Args:
    prediction: (n_local, L, D) predicted patches.
    target: (n_local, L, D) target patches.
    mask: (n_local, L), 1 where a patch is hidden (only those count), 0 where visible.
    axis_name: the batch's mesh axis.

  Returns:
    Scalar loss, identical on every device.
  """
  per_patch = jnp.mean(jnp.square(prediction.astype(jnp.float32) - target), axis=-1)
  return parallel.global_sum(jnp.sum(per_patch * mask), axis_name) / parallel.global_sum(jnp.sum(mask), axis_name)


def _encode_and_decode(model, x, keep_index, train):
  """SSLModel method: encode the patches at keep_index, decode every patch.

  Returns:
    (the encoder's features over the visible patches (n, D), read as config.model.pool says, the decoder's
    (n, H, W, C) prediction of every patch).
  """
  tokens = model.backbone(x, train=train, return_tokens=True, keep_index=keep_index)
  encoded = jnp.concatenate([tokens["cls"][:, None], tokens["patches"]], axis=1)
  return tokens["pooled"], model.decoder(encoded, x.shape[1:3], train=train, keep_index=keep_index)


class MAE(Method):
  """Minimise the squared error of the pixels of randomly masked patches, predicted from the rest.

  One augmented view per image (crop and flip) is cut into p x p patches; a random
  `mask_ratio` of them (exactly round(mask_ratio * L) per image, drawn per example from
  (seed, step, global index), so the masks do not depend on the device count) is hidden.
  The ViT backbone encodes only the visible patches (with their position embeddings) and
  the CLS token, so the encoder's cost falls with the visible fraction. The decoder
  (config.model.decoder = sslax.presets.vit_decoder(width, depth, num_heads), SSLModel's
  decoder slot) projects these tokens to its width, puts a learned mask token at every
  hidden patch, adds sin-cos position embeddings and predicts every patch's pixels. The
  loss is the mean squared error over the hidden patches only, the targets standardised
  per patch (norm_pix_loss, the paper's default) or the normalised pixels themselves.

  No projector. The representation evaluated downstream (kNN, linear probe, fine-tuning) is
  the backbone's usual output, the CLS token over all patches of an unmasked image. The
  online probe reads (and the collapse monitors watch) the CLS token of the masked
  training views, which costs no extra forward pass.
  """

  name = "mae"
  heads = ("decoder",)
  num_views = 1
  config_fields = {
      "mask_ratio": Field(0.75, "fraction of each image's patches hidden from the encoder", gt=0, lt=1),
      "norm_pix_loss": Field(True, "targets: each patch's pixels standardised by the patch's own mean and "
                             "std (True) or the normalised pixels", choices=(True, False)),
  }

  @classmethod
  def validate_config(cls, config) -> None:
    super().validate_config(config)
    from sslax.models import VITS

    model = config.model
    if model.backbone not in VITS:
      raise ConfigError(f"mae encodes only the visible patches, which needs a ViT backbone: config.model.backbone="
                        f"{model.backbone!r} is not one; use one of {', '.join(VITS)}.")
    if model.get("input", "rgb") != "rgb":
      raise ConfigError(f"mae reconstructs RGB patches: set config.model.input='rgb' (got {model.input!r}).")
    if model.decoder.get("kind", "conv") != "vit":
      raise ConfigError("mae needs its Transformer decoder: set config.model.decoder = "
                        "sslax.presets.vit_decoder(width, depth, num_heads) (kind='vit').")
    size, p = config.augment.crop_size, model.patch_size
    if size % p:
      raise ConfigError(f"config.augment.crop_size={size} must be a multiple of config.model.patch_size={p}.")
    num_patches = (size // p) ** 2
    hidden = num_masked(num_patches, config.mae.mask_ratio)
    if not 0 < hidden < num_patches:
      raise ConfigError(f"config.mae.mask_ratio={config.mae.mask_ratio} hides {hidden} of the {num_patches} patches "
                        f"of a {size}x{size} crop; at least one must be hidden and one visible.")

  @property
  def patch_size(self) -> int:
    return self.config.model.patch_size

  def masks(self, keys: jax.Array, size: tuple[int, int]) -> tuple[jax.Array, jax.Array]:
    """(keep_index, mask) of `random_masking` for images of `size` (H, W)."""
    num_patches = (size[0] // self.patch_size) * (size[1] // self.patch_size)
    return random_masking(keys, num_patches, self.settings.mask_ratio)

  def step_masks(self, step: jax.Array, n_local: int, size: tuple[int, int], axis_name: str | None):
    """The masks of this device's rows at `step`: keyed by (seed, step, global index)."""
    return self.masks(method_keys(self.config, step, n_local, axis_name, stream=_STREAM), size)

  def targets(self, images: jax.Array) -> jax.Array:
    """(n, L, p * p * C) float32 target patches of normalised images."""
    patches = patchify(images.astype(jnp.float32), self.patch_size)
    return normalize_patches(patches)[0] if self.settings.norm_pix_loss else patches

  def loss(self, model, params, batch_stats, method_state, views, *, step, axis_name, batch=None):
    del batch
    x = views[0]
    keep_index, mask = self.step_masks(step, x.shape[0], x.shape[1:3], axis_name)
    features, reconstruction = model.apply({"params": params, "batch_stats": batch_stats}, x, keep_index, True,
                                           method=_encode_and_decode)
    loss = masked_patch_loss(patchify(reconstruction, self.patch_size), self.targets(x), mask, axis_name)
    # A ViT has no BatchNorm, and the decoder neither: the statistics pass through.
    return LossOutput(loss=loss, batch_stats=batch_stats, method_state=method_state, features=features,
                      embeddings=features)

  def preview(self, model, variables, images, keys):
    """[masked inputs (hidden patches at the mean colour), reconstructions (visible patches
    from the input, hidden ones predicted; with norm_pix_loss un-normalised with each
    patch's true mean and std, as the paper's figures)]."""
    size, p = images.shape[1:3], self.patch_size
    keep_index, mask = self.masks(keys, size)
    _, reconstruction = model.apply(variables, images, keep_index, False, method=_encode_and_decode)
    patches = patchify(images.astype(jnp.float32), p)
    prediction = patchify(reconstruction, p)
    if self.settings.norm_pix_loss:
      _, mean, std = normalize_patches(patches)
      prediction = prediction * std + mean
    hidden = mask[..., None] > 0
    return [unpatchify(jnp.where(hidden, 0.0, patches), p, size),
            unpatchify(jnp.where(hidden, prediction, patches), p, size)]
