"""Backbones and heads, chosen by name from the config."""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from sslax.models.heads import MLPHead
from sslax.models.resnet import RESNET_DEPTHS, BasicBlock, BottleneckBlock, ResNet

BACKBONES = ("resnet18", "resnet34", "resnet50")


def build_backbone(model_cfg, bn_axis_name: str | None = None) -> nn.Module:
  """Builds the backbone named by `model_cfg.backbone`.

  Args:
    model_cfg: config with `backbone`, `width_multiplier`, `stem` and optional `dtype`.
    bn_axis_name: mesh axis for global BatchNorm statistics.

  Returns:
    A Flax module mapping (B, H, W, 3) images to (B, D) features.
  """
  name = model_cfg.backbone
  if name not in BACKBONES:
    raise ValueError(f"Unknown backbone {name!r}; valid choices: {', '.join(BACKBONES)}.")
  stages, block = RESNET_DEPTHS[int(name[len("resnet"):])]
  return ResNet(stage_sizes=stages, block_cls=block, width_multiplier=model_cfg.width_multiplier,
                stem=model_cfg.stem, bn_axis_name=bn_axis_name,
                dtype=jnp.dtype(model_cfg.get("dtype", "float32")))


class SSLModel(nn.Module):
  """Backbone + projection head. Params live under 'backbone' and 'projector', so the
  backbone alone can be exported for downstream use."""

  backbone: nn.Module
  projector: nn.Module

  def __call__(self, x, train: bool = True) -> dict[str, Any]:
    features = self.backbone(x, train=train)
    return {"features": features, "projection": self.projector(features, train=train)}


def build_model(model_cfg, bn_axis_name: str | None = None) -> SSLModel:
  """Backbone and projection head from `model_cfg` (see configs/simclr.py)."""
  head = model_cfg.projector
  return SSLModel(
      backbone=build_backbone(model_cfg, bn_axis_name),
      projector=MLPHead(hidden_dims=tuple(head.hidden_dims), output_dim=head.output_dim, use_bn=head.use_bn,
                        last_bn=head.last_bn, bn_axis_name=bn_axis_name),
  )


__all__ = ["BACKBONES", "BasicBlock", "BottleneckBlock", "MLPHead", "ResNet", "SSLModel", "build_backbone",
           "build_model"]
