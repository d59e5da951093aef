"""Projection and prediction MLP heads, and the prototype layer of SwAV/DINO/DeepCluster v2."""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

ACTIVATIONS = {"relu": nn.relu, "gelu": nn.gelu}


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
    activation: 'relu' (SimCLR, BYOL, ...) or 'gelu' (DINO's head).
  """

  hidden_dims: Sequence[int] = (2048,)
  output_dim: int = 128
  use_bn: bool = True
  last_bn: bool = False
  bn_axis_name: str | None = None
  bn_momentum: float = 0.9
  activation: str = "relu"

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
      x = ACTIVATIONS[self.activation](x)
    x = nn.Dense(self.output_dim, use_bias=not self.last_bn, name="output")(x)
    if self.last_bn:
      x = nn.BatchNorm(use_running_average=not train, momentum=self.bn_momentum, axis_name=axis,
                       use_scale=False, use_bias=False, name="output_bn")(x)
    return x.astype(jnp.float32)


class Prototypes(nn.Module):
  """Scores of L2-normalised embeddings against K prototype vectors (no bias).

  Each prototype (a column of the kernel) is L2-normalised in the forward pass, so the
  scores are cosine similarities: SwAV normalises its prototypes before every step and
  DINO's last layer is weight-normalised with its gain fixed to 1; normalising in the
  forward gives both the same outputs as a pure function of the parameters.

  Attributes:
    num_prototypes: K.
  """

  num_prototypes: int

  @nn.compact
  def __call__(self, z):
    """Args:
      z: (B, d) embeddings; L2-normalised here.

    Returns:
      (B, K) float32 cosine similarities.
    """
    z = z.astype(jnp.float32)
    z = z / jnp.maximum(jnp.linalg.norm(z, axis=-1, keepdims=True), 1e-12)
    kernel = self.param("kernel", nn.initializers.lecun_normal(), (z.shape[-1], self.num_prototypes))
    kernel = kernel / jnp.maximum(jnp.linalg.norm(kernel, axis=0, keepdims=True), 1e-12)
    return z @ kernel
