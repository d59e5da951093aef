"""ResNet backbones (He et al. 2016) with ImageNet or CIFAR stems.

BatchNorm statistics are reduced over `bn_axis_name` when it is set, so inside a
`shard_map` over the data axis every device normalises with the global-batch
mean and variance (SimCLR's "global BN"), exactly as a single device would.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp

ModuleDef = Any


def _add_shortcut(block: nn.Module, residual, y):
  """relu(shortcut(residual) + y); the shortcut is a 1x1 conv + BN when the shape changes."""
  if residual.shape != y.shape:
    residual = block.conv(y.shape[-1], (1, 1), block.strides, name="proj_conv")(residual)
    residual = block.norm(name="proj_bn")(residual)
  return nn.relu(residual + y)


class BasicBlock(nn.Module):
  """Two 3x3 convolutions with an identity (or 1x1 projection) shortcut."""

  filters: int
  strides: int
  conv: ModuleDef
  norm: ModuleDef

  @nn.compact
  def __call__(self, x):
    residual = x
    y = self.conv(self.filters, (3, 3), self.strides)(x)
    y = nn.relu(self.norm()(y))
    y = self.conv(self.filters, (3, 3))(y)
    # Zero-initialised last BN scale: each block starts as the identity (Goyal et al. 2017).
    y = self.norm(scale_init=nn.initializers.zeros)(y)
    return _add_shortcut(self, residual, y)


class BottleneckBlock(nn.Module):
  """1x1 reduce, 3x3, 1x1 expand (x4), with a projection shortcut when shapes change."""

  filters: int
  strides: int
  conv: ModuleDef
  norm: ModuleDef

  @nn.compact
  def __call__(self, x):
    residual = x
    y = nn.relu(self.norm()(self.conv(self.filters, (1, 1))(x)))
    y = nn.relu(self.norm()(self.conv(self.filters, (3, 3), self.strides)(y)))
    y = self.conv(self.filters * 4, (1, 1))(y)
    y = self.norm(scale_init=nn.initializers.zeros)(y)
    return _add_shortcut(self, residual, y)


class ResNet(nn.Module):
  """ResNet returning globally average-pooled features.

  Attributes:
    stage_sizes: blocks per stage, e.g. (2, 2, 2, 2) for ResNet-18.
    block_cls: BasicBlock or BottleneckBlock.
    width: channels of the first stage (64 in the paper); `width_multiplier` scales it.
    width_multiplier: multiplies every stage's width (e.g. 0.25 gives a 16-wide ResNet-18).
    stem: 'imagenet' (7x7/2 conv + 3x3/2 max-pool) or 'cifar' (3x3/1 conv, no pool).
    bn_axis_name: mesh axis over which BatchNorm statistics are averaged (None: local).
    bn_momentum: running-average momentum of BatchNorm statistics.
    dtype: computation dtype (parameters stay float32).
    conv_general_dilated: the convolution primitive (None: `lax.conv_general_dilated`);
      `sslax.models.conv.conv_general_dilated` computes the gradients as GEMMs, faster on CPUs.
    batch_norm: the BatchNorm module class (`flax.linen.BatchNorm` or `sslax.models.norm.BatchNorm`,
      whose two-pass backward is faster on CPUs; both hold the same variables).
  """

  stage_sizes: Sequence[int]
  block_cls: Callable[..., nn.Module]
  width: int = 64
  width_multiplier: float = 1.0
  stem: str = "cifar"
  bn_axis_name: str | None = None
  bn_momentum: float = 0.9
  dtype: Any = jnp.float32
  conv_general_dilated: Callable[..., Any] | None = None
  batch_norm: Callable[..., nn.Module] = nn.BatchNorm

  @nn.compact
  def __call__(self, x, train: bool = True):
    """Args:
      x: float images (B, H, W, 3), already normalised.
      train: use batch statistics (and update the running ones) when True.

    Returns:
      (B, D) pooled features, D = final stage width (x4 for bottleneck blocks).
    """
    conv = functools.partial(nn.Conv, use_bias=False, dtype=self.dtype, conv_general_dilated=self.conv_general_dilated,
                             kernel_init=nn.initializers.variance_scaling(2.0, "fan_out", "normal"))
    norm = functools.partial(self.batch_norm, use_running_average=not train, momentum=self.bn_momentum,
                             epsilon=1e-5, dtype=self.dtype, axis_name=self.bn_axis_name if train else None)
    base = max(1, int(round(self.width * self.width_multiplier)))
    if self.stem == "imagenet":
      x = conv(base, (7, 7), (2, 2), padding=[(3, 3), (3, 3)], name="stem_conv")(x)
      x = nn.relu(norm(name="stem_bn")(x))
      x = nn.max_pool(x, (3, 3), strides=(2, 2), padding="SAME")
    elif self.stem == "cifar":
      x = conv(base, (3, 3), name="stem_conv")(x)
      x = nn.relu(norm(name="stem_bn")(x))
    else:
      raise ValueError(f"Unknown ResNet stem {self.stem!r}; valid: 'imagenet', 'cifar'.")
    for i, num_blocks in enumerate(self.stage_sizes):
      for j in range(num_blocks):
        strides = 2 if i > 0 and j == 0 else 1
        x = self.block_cls(base * 2**i, strides, conv=conv, norm=norm, name=f"stage{i + 1}_block{j + 1}")(x)
    return jnp.mean(x, axis=(1, 2)).astype(jnp.float32)


RESNET_DEPTHS = {
    18: ((2, 2, 2, 2), BasicBlock),
    34: ((3, 4, 6, 3), BasicBlock),
    50: ((3, 4, 6, 3), BottleneckBlock),
}
