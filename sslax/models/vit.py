"""Vision Transformer backbones (Dosovitskiy et al. 2021).

Position embeddings are fixed 2-D sine-cosine tables (as in MoCo v3 and MAE),
computed for the actual patch grid at call time. The same parameters therefore
serve every input resolution, which multi-crop needs (e.g. 32x32 global and
16x16 local crops through one network). There is no BatchNorm, so the module
has only a 'params' collection.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

# ViT-style init (timm / MAE): xavier-uniform Dense kernels, zero biases.
_dense_init = nn.initializers.xavier_uniform()
_LN_EPS = 1e-6


def sincos_2d_position_embedding(grid_h: int, grid_w: int, width: int) -> np.ndarray:
  """Fixed 2-D sine-cosine position embeddings, MAE's `get_2d_sincos_pos_embed`.

  Tokens are ordered row-major (row index outer, column index inner), matching a
  (B, grid_h, grid_w, D) feature map reshaped to (B, grid_h * grid_w, D). The first
  width/2 channels encode the column (w) coordinate and the last width/2 the row (h)
  coordinate; MAE's code calls the first half "emb_h" but, because of
  `np.meshgrid(grid_w, grid_h)`, it holds the column coordinate, and we keep its exact
  layout. Each half is [sin(pos * omega), cos(pos * omega)] with
  omega_k = 1 / 10000 ** (k / (width / 4)), k = 0 .. width/4 - 1.

  Args:
    grid_h: number of patch rows.
    grid_w: number of patch columns.
    width: embedding dimension; must be divisible by 4.

  Returns:
    (grid_h * grid_w, width) float32 NumPy array (a compile-time constant under jit).
  """
  if width % 4:
    raise ValueError(f"sin-cos position embedding width must be divisible by 4, got {width}.")
  quarter = width // 4
  omega = 1.0 / 10000.0 ** (np.arange(quarter, dtype=np.float64) / quarter)
  rows, cols = np.meshgrid(np.arange(grid_h, dtype=np.float64), np.arange(grid_w, dtype=np.float64),
                           indexing="ij")

  def encode(pos):
    out = np.outer(pos.reshape(-1), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)

  return np.concatenate([encode(cols), encode(rows)], axis=1).astype(np.float32)


def _drop_path(module: nn.Module, x, rate: float, train: bool):
  """Stochastic depth: drops the whole residual branch per example, rescaling the kept ones.

  Inactive unless training with rate > 0 and a 'dropout' rng, so inference and the
  default configuration need no rng.
  """
  if not train or rate <= 0.0 or not module.has_rng("dropout"):
    return x
  keep = 1.0 - rate
  mask = jax.random.bernoulli(module.make_rng("dropout"), keep, (x.shape[0],) + (1,) * (x.ndim - 1))
  return jnp.where(mask, x / keep, jnp.zeros_like(x))


class SelfAttention(nn.Module):
  """Multi-head self-attention with a fused qkv projection (as timm / MAE).

  Attributes:
    num_heads: attention heads; must divide the token width.
    dtype: computation dtype.
  """

  num_heads: int
  dtype: Any = jnp.float32
  causal: bool = False  # Token t attends to tokens <= t only (text towers).

  @nn.compact
  def __call__(self, x):
    batch, tokens, width = x.shape
    head_dim = width // self.num_heads
    qkv = nn.Dense(3 * width, dtype=self.dtype, kernel_init=_dense_init, name="qkv")(x)
    q, k, v = jnp.split(qkv.reshape(batch, tokens, 3, self.num_heads, head_dim), 3, axis=2)
    # (B, T, heads, head_dim) each; softmax(q k^T / sqrt(head_dim)) v.
    y = jax.nn.dot_product_attention(q[:, :, 0], k[:, :, 0], v[:, :, 0], is_causal=self.causal)
    return nn.Dense(width, dtype=self.dtype, kernel_init=_dense_init, name="proj")(
        y.reshape(batch, tokens, width))


class TransformerBlock(nn.Module):
  """Pre-LN block: x + attn(LN(x)), then x + MLP(LN(x)), each branch with stochastic depth.

  Attributes:
    num_heads: attention heads.
    mlp_ratio: MLP hidden width / token width.
    drop_path_rate: probability of dropping each residual branch while training.
    dtype: computation dtype.
    causal: causal self-attention (text towers).
  """

  num_heads: int
  mlp_ratio: float = 4.0
  drop_path_rate: float = 0.0
  dtype: Any = jnp.float32
  causal: bool = False

  @nn.compact
  def __call__(self, x, train: bool = True):
    width = x.shape[-1]
    y = nn.LayerNorm(epsilon=_LN_EPS, dtype=self.dtype, name="norm1")(x)
    y = SelfAttention(self.num_heads, dtype=self.dtype, causal=self.causal, name="attn")(y)
    x = x + _drop_path(self, y, self.drop_path_rate, train)
    y = nn.LayerNorm(epsilon=_LN_EPS, dtype=self.dtype, name="norm2")(x)
    y = nn.Dense(int(width * self.mlp_ratio), dtype=self.dtype, kernel_init=_dense_init, name="fc1")(y)
    # Exact (erf) GELU, as PyTorch's nn.GELU used by timm / MAE; flax defaults to the tanh form.
    y = nn.gelu(y, approximate=False)
    y = nn.Dense(width, dtype=self.dtype, kernel_init=_dense_init, name="fc2")(y)
    return x + _drop_path(self, y, self.drop_path_rate, train)


POOLS = ("cls", "mean")


class VisionTransformer(nn.Module):
  """ViT returning the final-normed CLS token, or the mean of the final-normed patch tokens.

  Attributes:
    patch_size: side of the square patches (the patch-embedding conv's kernel and stride).
    width: token dimension D; must be divisible by 4 (sin-cos embedding) and by num_heads.
    depth: number of transformer blocks.
    num_heads: attention heads per block.
    mlp_ratio: MLP hidden width / D.
    dtype: computation dtype (parameters stay float32).
    drop_path_rate: stochastic-depth rate of the last block, increasing linearly from 0 over
      depth (timm convention); active only when train=True and a 'dropout' rng is given.
    pool: the image feature: 'cls' (the class token, ViT's and MAE's linear-probe reading) or
      'mean' (the mean of the patch tokens, MAE's `global_pool`). It changes no parameter, so
      one checkpoint can be read either way.
  """

  patch_size: int
  width: int
  depth: int
  num_heads: int
  mlp_ratio: float = 4.0
  dtype: Any = jnp.float32
  drop_path_rate: float = 0.0
  pool: str = "cls"

  @nn.compact
  def __call__(self, x, train: bool = True, return_tokens: bool = False, keep_index=None):
    """Args:
      x: float images (B, H, W, 3), already normalised; H and W multiples of patch_size.
      train: enables stochastic depth (given a 'dropout' rng).
      return_tokens: also return the patch tokens.
      keep_index: optional int (B, K) indices (row-major) of the only patches the blocks see
        (MAE's encoder over the visible patches); they are taken after the patch and
        position embeddings, so each keeps its position. None: every patch.

    Returns:
      (B, width) float32 features (see `pool`), or with return_tokens a dict {'cls': (B, width),
      'patches': (B, N, width), 'pooled': (B, width)} of final-normed float32 tokens and the
      features, N = (H / p) * (W / p) in row-major patch order (with keep_index: N = K, in
      keep_index's order, and 'pooled' reads only those).
    """
    p = self.patch_size
    if self.pool not in POOLS:
      raise ValueError(f"Unknown ViT pool {self.pool!r} (config.model.pool); valid choices: {', '.join(POOLS)}.")
    if x.ndim != 4 or x.shape[1] % p or x.shape[2] % p:
      raise ValueError(f"VisionTransformer expects (B, H, W, C) images with H and W multiples of "
                       f"patch_size={p}; got shape {tuple(x.shape)}.")
    if self.width % self.num_heads:
      raise ValueError(f"width={self.width} is not divisible by num_heads={self.num_heads}.")
    # MAE initialises the patch projection as a Dense layer on the flattened (p * p * C) patch.
    patch_init = nn.initializers.xavier_uniform(in_axis=(0, 1, 2), out_axis=3)
    x = nn.Conv(self.width, (p, p), strides=(p, p), padding="VALID", dtype=self.dtype,
                kernel_init=patch_init, name="patch_embed")(x)
    batch, grid_h, grid_w, _ = x.shape
    x = x.reshape(batch, grid_h * grid_w, self.width)
    x = x + jnp.asarray(sincos_2d_position_embedding(grid_h, grid_w, self.width), self.dtype)
    if keep_index is not None:  # The blocks' cost then scales with K, not N.
      x = jnp.take_along_axis(x, keep_index[:, :, None], axis=1)
    # The CLS token's position embedding is zero, so it is simply prepended after adding them.
    cls = self.param("cls_token", nn.initializers.normal(stddev=0.02), (1, 1, self.width))
    x = jnp.concatenate([jnp.broadcast_to(cls.astype(self.dtype), (batch, 1, self.width)), x], axis=1)
    for i in range(self.depth):
      rate = self.drop_path_rate * i / max(self.depth - 1, 1)
      x = TransformerBlock(self.num_heads, self.mlp_ratio, rate, dtype=self.dtype, name=f"block{i + 1}")(
          x, train=train)
    x = nn.LayerNorm(epsilon=_LN_EPS, dtype=self.dtype, name="encoder_norm")(x).astype(jnp.float32)
    pooled = x[:, 0] if self.pool == "cls" else x[:, 1:].mean(axis=1)
    if return_tokens:
      return {"cls": x[:, 0], "patches": x[:, 1:], "pooled": pooled}
    return pooled


VIT_VARIANTS = {
    "vit_test": dict(width=32, depth=2, num_heads=2),
    "vit_tiny": dict(width=192, depth=12, num_heads=3),
    "vit_small": dict(width=384, depth=12, num_heads=6),
    "vit_base": dict(width=768, depth=12, num_heads=12),
}


def build_vit(name: str, patch_size: int, dtype=jnp.float32, drop_path_rate: float = 0.0,
              pool: str = "cls", **overrides) -> VisionTransformer:
  """A named ViT variant.

  Args:
    name: a key of VIT_VARIANTS.
    patch_size: patch side (e.g. 16 for 224px ImageNet, 4 for 32px CIFAR).
    dtype: computation dtype.
    drop_path_rate: stochastic-depth rate (see VisionTransformer).
    pool: 'cls' or 'mean' (see VisionTransformer).
    **overrides: replace any VisionTransformer attribute of the variant (e.g. depth, mlp_ratio).

  Returns:
    The (unbound) VisionTransformer module.
  """
  if name not in VIT_VARIANTS:
    raise ValueError(f"Unknown ViT variant {name!r}; valid choices: {', '.join(VIT_VARIANTS)}.")
  kwargs = {**VIT_VARIANTS[name], **overrides}
  return VisionTransformer(patch_size=patch_size, dtype=dtype, drop_path_rate=drop_path_rate, pool=pool, **kwargs)


def patchify(images: jax.Array, patch_size: int) -> jax.Array:
  """Images -> flattened patches, MAE's `patchify` in channels-last layout.

  Args:
    images: (B, H, W, C), H and W multiples of patch_size.
    patch_size: p.

  Returns:
    (B, (H / p) * (W / p), p * p * C): patches in row-major order (the ViT's token order),
    each flattened as (row in patch, column in patch, channel).
  """
  b, h, w, c = images.shape
  p = patch_size
  x = images.reshape(b, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, (h // p) * (w // p), p * p * c)


def unpatchify(patches: jax.Array, patch_size: int, size: tuple[int, int]) -> jax.Array:
  """The inverse of `patchify`: (B, N, p * p * C) patches -> (B, H, W, C) images of `size` (H, W)."""
  b, _, d = patches.shape
  h, w, p = size[0], size[1], patch_size
  c = d // (p * p)
  x = patches.reshape(b, h // p, w // p, p, p, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, h, w, c)


class MaskedPatchDecoder(nn.Module):
  """MAE's lightweight decoder: encoder tokens + learned mask tokens -> every patch's pixels.

  The encoder's tokens (the CLS token, then the visible patches' tokens) are projected to
  the decoder width; a shared learned mask token fills the positions of the masked
  patches; fixed sin-cos position embeddings (zero for the CLS token) are added; then
  `depth` pre-LN Transformer blocks, a LayerNorm and a linear layer to p * p * C values per
  patch (He et al. 2022, models_mae.py `forward_decoder`). The output is put back together
  as an image, so the module fits SSLModel's decoder slot ('reconstruction' of the input's
  size).

  Attributes:
    patch_size: the encoder's patch side p.
    width: decoder token width (divisible by 4 and by num_heads).
    depth: decoder Transformer blocks.
    num_heads: attention heads per block.
    mlp_ratio: MLP hidden width / width.
    out_channels: channels predicted per pixel.
    dtype: computation dtype (the output is float32).
  """

  patch_size: int
  width: int = 512
  depth: int = 8
  num_heads: int = 16
  mlp_ratio: float = 4.0
  out_channels: int = 3
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, z, size: tuple[int, int], train: bool = True, keep_index=None):
    """Args:
      z: (B, 1 + K, D) final-normed encoder tokens, CLS first, then the patches at
        keep_index; or (B, D) pooled features, decoded as a CLS token alone (every patch
        a mask token: what SSLModel's pretext forward, and so initialisation, passes).
      size: (H, W) of the image; multiples of patch_size.
      train: unused (no dropout); kept for the decoder slot's signature.
      keep_index: int (B, K) row-major indices of the patches z holds; None with pooled z.

    Returns:
      (B, H, W, out_channels) float32 prediction of every patch (the loss reads the masked ones).
    """
    del train
    p = self.patch_size
    h, w = size
    if h % p or w % p:
      raise ValueError(f"MaskedPatchDecoder needs image sides that are multiples of patch_size={p}; got {h}x{w}.")
    if self.width % self.num_heads:
      raise ValueError(f"Decoder width={self.width} is not divisible by num_heads={self.num_heads}.")
    if z.ndim == 2:
      z, keep_index = z[:, None], jnp.zeros((z.shape[0], 0), jnp.int32)
    batch, grid_h, grid_w = z.shape[0], h // p, w // p
    x = nn.Dense(self.width, dtype=self.dtype, kernel_init=_dense_init, name="embed")(z)
    mask_token = self.param("mask_token", nn.initializers.normal(stddev=0.02), (1, 1, self.width))
    tokens = jnp.broadcast_to(mask_token.astype(x.dtype), (batch, grid_h * grid_w, self.width))
    # Visible tokens back at their patches' positions (MAE un-shuffles with ids_restore).
    tokens = jax.vmap(lambda t, i, v: t.at[i].set(v))(tokens, keep_index, x[:, 1:])
    tokens = tokens + jnp.asarray(sincos_2d_position_embedding(grid_h, grid_w, self.width), x.dtype)
    x = jnp.concatenate([x[:, :1], tokens], axis=1)
    for i in range(self.depth):
      x = TransformerBlock(self.num_heads, self.mlp_ratio, dtype=self.dtype, name=f"block{i + 1}")(x, train=False)
    x = nn.LayerNorm(epsilon=_LN_EPS, dtype=self.dtype, name="norm")(x)
    x = nn.Dense(p * p * self.out_channels, dtype=self.dtype, kernel_init=_dense_init, name="pred")(x[:, 1:])
    return unpatchify(x.astype(jnp.float32), p, size)
