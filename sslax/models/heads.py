"""Projection (and later prediction) MLP heads."""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp


class MLPHead(nn.Module):
  """Dense -> BN -> ReLU for each hidden layer, then a linear output layer.

  SimCLR's projection head g(.) (Chen et al. 2020): the loss is applied to its output
  while the representation used downstream is its input.

  Attributes:
    hidden_dims: widths of the hidden layers (empty for a linear head).
    output_dim: embedding dimension.
    use_bn: BatchNorm after each hidden Dense layer.
    last_bn: BatchNorm (without learned scale/offset) after the output layer (SimCLR v2, BYOL-style).
    bn_axis_name: mesh axis for global-batch BatchNorm statistics.
  """

  hidden_dims: Sequence[int] = (2048,)
  output_dim: int = 128
  use_bn: bool = True
  last_bn: bool = False
  bn_axis_name: str | None = None
  bn_momentum: float = 0.9

  @nn.compact
  def __call__(self, x, train: bool = True):
    """Args:
      x: (B, D) features.
      train: batch statistics for BN when True.

    Returns:
      (B, output_dim) float32 embeddings.
    """
    axis = self.bn_axis_name if train else None
    for i, width in enumerate(self.hidden_dims):
      x = nn.Dense(width, use_bias=not self.use_bn, name=f"hidden{i + 1}")(x)
      if self.use_bn:
        x = nn.BatchNorm(use_running_average=not train, momentum=self.bn_momentum, axis_name=axis,
                         name=f"bn{i + 1}")(x)
      x = nn.relu(x)
    x = nn.Dense(self.output_dim, use_bias=not self.last_bn, name="output")(x)
    if self.last_bn:
      x = nn.BatchNorm(use_running_average=not train, momentum=self.bn_momentum, axis_name=axis,
                       use_scale=False, use_bias=False, name="output_bn")(x)
    return x.astype(jnp.float32)
