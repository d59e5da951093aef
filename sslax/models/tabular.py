"""The MLP encoder of tabular methods (SCARF, Bahri et al. 2022)."""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


class TabularMLP(nn.Module):
  """Numeric columns and one-hot categorical columns -> a stack of Dense + ReLU layers.

  SCARF's encoder is a 4-layer ReLU MLP of width 256 (section 4 of the paper); its output,
  the last hidden layer, is the representation that probes and fine-tuning read.

  Attributes:
    hidden_dims: widths of the layers; the last is the feature dimension.
    max_categories: one-hot size of every categorical column (codes 0..max_categories-1;
      0 is missing or unseen), config.data.table.max_categories.
    dtype: compute dtype.
  """

  hidden_dims: Sequence[int] = (256, 256, 256, 256)
  max_categories: int = 64
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: dict[str, jax.Array], train: bool = True) -> jax.Array:
    """Args:
      x: {'numeric': float (B, n_numeric), 'categorical': int (B, n_categorical)}.
      train: unused (no BatchNorm or dropout), kept for the backbone interface.

    Returns:
      (B, hidden_dims[-1]) float32 features.
    """
    del train
    numeric, categorical = x["numeric"], x["categorical"]
    onehot = jax.nn.one_hot(categorical, self.max_categories, dtype=self.dtype)
    h = jnp.concatenate([numeric.astype(self.dtype), onehot.reshape(categorical.shape[0], -1)], axis=-1)
    for i, width in enumerate(self.hidden_dims):
      h = nn.relu(nn.Dense(width, dtype=self.dtype, name=f"dense{i + 1}")(h))
    return h.astype(jnp.float32)
