"""A text tower for image-text contrastive learning (CLIP/SigLIP) that needs no download.

Tokens are UTF-8 bytes (a byte-level vocabulary of 256 + 3 special tokens, as ByT5 does), so
any caption in any language is encoded without a learned tokenizer or a vocabulary file.
The tower is CLIP's text Transformer in miniature: token and learned position embeddings,
pre-LN blocks with causal self-attention, a final LayerNorm, and the feature of the
end-of-text token (Radford et al. 2021, section 2.4).
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from sslax.models.vit import TransformerBlock

PAD, START, END = 0, 1, 2
VOCAB_SIZE = 256 + 3  # Byte b is token b + 3.


def tokenize(texts: Sequence[str], max_len: int = 64) -> np.ndarray:
  """Byte-level tokens: [START] + UTF-8 bytes (cut to fit) + [END], padded with PAD.

  Args:
    texts: the captions.
    max_len: tokens per caption (at least 3).

  Returns:
    int32 (len(texts), max_len).
  """
  if max_len < 3:
    raise ValueError(f"max_len={max_len}: a caption needs at least 3 tokens (start, one byte, end).")
  out = np.full((len(texts), max_len), PAD, np.int32)
  for i, text in enumerate(texts):
    body = np.frombuffer(text.encode("utf-8"), np.uint8)[:max_len - 2].astype(np.int32) + 3
    out[i, 0], out[i, 1:1 + len(body)], out[i, 1 + len(body)] = START, body, END
  return out


class TextTransformer(nn.Module):
  """Causal Transformer over byte tokens; returns the end-token feature.

  Attributes:
    width: token width.
    depth: blocks.
    num_heads: attention heads.
    max_len: longest token sequence (the position table's length).
    dtype: computation dtype.
  """

  width: int = 256
  depth: int = 4
  num_heads: int = 4
  max_len: int = 64
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, tokens, train: bool = True):
    x = nn.Embed(VOCAB_SIZE, self.width, embedding_init=nn.initializers.normal(0.02), name="token_embed")(tokens)
    pos = self.param("pos_embed", nn.initializers.normal(0.01), (self.max_len, self.width))
    x = (x + pos[None, :tokens.shape[1]]).astype(self.dtype)
    for i in range(self.depth):
      x = TransformerBlock(self.num_heads, dtype=self.dtype, causal=True, name=f"block{i}")(x, train=train)
    x = nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, name="norm")(x)
    end = jnp.argmax(tokens == END, axis=1)  # Causal: the end token has read the whole caption.
    return jnp.take_along_axis(x, end[:, None, None], axis=1)[:, 0].astype(jnp.float32)


class TextTower(nn.Module):
  """The text side of an image-text model: TextTransformer, a linear projection to the shared
  space, and the learned logit scale (log of the inverse temperature) and bias of the loss.

  Attributes:
    transformer: the TextTransformer.
    output_dim: shared embedding width (the image projector's output_dim).
    logit_scale_init: initial log scale (CLIP: log(1/0.07); SigLIP: log 10).
    logit_bias_init: initial bias (SigLIP: -10; unused by CLIP's loss).
  """

  transformer: TextTransformer
  output_dim: int
  logit_scale_init: float = float(np.log(1 / 0.07))
  logit_bias_init: float = -10.0

  @nn.compact
  def __call__(self, tokens, train: bool = True):
    features = self.transformer(tokens, train=train)
    projection = nn.Dense(self.output_dim, use_bias=False, name="projection")(features)
    scale = self.param("logit_scale", nn.initializers.constant(self.logit_scale_init), ())
    bias = self.param("logit_bias", nn.initializers.constant(self.logit_bias_init), ())
    return {"text_projection": projection, "logit_scale": scale, "logit_bias": bias}


def build_text_tower(cfg, output_dim: int, dtype=jnp.float32) -> TextTower:
  """A TextTower from a config with width, depth, num_heads, max_len, logit_scale_init, logit_bias_init."""
  return TextTower(TextTransformer(width=cfg.width, depth=cfg.depth, num_heads=cfg.num_heads, max_len=cfg.max_len,
                                   dtype=dtype),
                   output_dim=output_dim, logit_scale_init=float(cfg.logit_scale_init),
                   logit_bias_init=float(cfg.logit_bias_init))
