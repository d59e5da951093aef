"""Projection and prediction MLP heads, the prototype layer of SwAV/DINO/DeepCluster v2, and a
convolutional decoder for the autoencoding pretext tasks."""
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
    output_init_scale: standard deviation of the output layer's initial kernel relative to
      LeCun-normal (1.0). Losses on unnormalised outputs with a fixed margin (counting) need
      small initial outputs so that the margin term is active from the first step.
  """

  hidden_dims: Sequence[int] = (2048,)
  output_dim: int = 128
  use_bn: bool = True
  last_bn: bool = False
  bn_axis_name: str | None = None
  bn_momentum: float = 0.9
  activation: str = "relu"
  output_init_scale: float = 1.0

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
    kernel_init = nn.initializers.variance_scaling(self.output_init_scale ** 2, "fan_in", "truncated_normal")
    x = nn.Dense(self.output_dim, use_bias=not self.last_bn, kernel_init=kernel_init, name="output")(x)
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


class ConvDecoder(nn.Module):
  """Pooled features -> an image: a Dense layer to a coarse grid, then 2x up-convolutions.

  The decoder of the autoencoders (denoising autoencoder): everything it reconstructs must
  pass through the backbone's pooled feature vector, the representation that is evaluated.
  Dense -> (H/2^u, W/2^u, width) grid -> u x [3x3 transposed conv, stride 2, BN, ReLU]
  (halving the width each time, at least 16) -> 3x3 conv to 3 channels.

  Attributes:
    width: channels of the coarse grid.
    num_upsamples: u; the image's sides must be multiples of 2^u.
    out_channels: output channels.
    bn_axis_name: mesh axis for global-batch BatchNorm statistics.
    bn_momentum: BatchNorm running-average momentum.
  """

  width: int = 256
  num_upsamples: int = 3
  out_channels: int = 3
  bn_axis_name: str | None = None
  bn_momentum: float = 0.9

  @nn.compact
  def __call__(self, z, size: tuple[int, int], train: bool = True):
    """Args:
      z: (B, D) features.
      size: (H, W) of the image to produce.
      train: batch statistics for BN when True.

    Returns:
      (B, H, W, out_channels) float32 image in the model's input (normalised) space.
    """
    factor = 2 ** self.num_upsamples
    h, w = size
    if h % factor or w % factor:
      raise ValueError(f"The decoder upsamples {self.num_upsamples} times, so the image sides must be multiples of "
                       f"{factor}; got {h}x{w}. Change config.augment.crop_size or config.model.decoder.num_upsamples.")
    axis = self.bn_axis_name if train else None

    def bn_relu(x, name):
      return nn.relu(nn.BatchNorm(use_running_average=not train, momentum=self.bn_momentum, axis_name=axis,
                                  name=name)(x))

    x = nn.Dense((h // factor) * (w // factor) * self.width, use_bias=False, name="grid")(z.astype(jnp.float32))
    x = bn_relu(x.reshape(z.shape[0], h // factor, w // factor, self.width), "grid_bn")
    channels = self.width
    for i in range(self.num_upsamples):
      channels = max(channels // 2, 16)
      x = nn.ConvTranspose(channels, (3, 3), strides=(2, 2), padding="SAME", use_bias=False, name=f"up{i + 1}")(x)
      x = bn_relu(x, f"up{i + 1}_bn")
    return nn.Conv(self.out_channels, (3, 3), padding="SAME", name="out")(x).astype(jnp.float32)


class SplitDecoder(nn.Module):
  """One ConvDecoder per equal slice of the features, outputs stacked along channels.

  The split-brain autoencoder's cross-channel predictors: the first half of the features
  (the L network's) decodes to the ab logits, the second (the ab network's) to the L
  logits, so neither half sees the channels it predicts.

  Attributes:
    width, num_upsamples, bn_axis_name: as ConvDecoder, for every slice.
    out_channels: channels decoded from each slice, in order.
  """

  width: int = 256
  num_upsamples: int = 3
  out_channels: Sequence[int] = (3, 3)
  bn_axis_name: str | None = None

  @nn.compact
  def __call__(self, z, size: tuple[int, int], train: bool = True):
    """(B, D) features, D divisible by len(out_channels) -> (B, H, W, sum(out_channels))."""
    slices = jnp.split(z, len(self.out_channels), axis=-1)
    return jnp.concatenate([ConvDecoder(self.width, self.num_upsamples, c, self.bn_axis_name, name=f"decoder{i + 1}")(
        s, size, train=train) for i, (s, c) in enumerate(zip(slices, self.out_channels))], axis=-1)
