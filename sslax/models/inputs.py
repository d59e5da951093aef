"""Backbones that see other colour channels than RGB: the L channel of CIE Lab
(colourisation) or both halves of a split-brain network (L and ab).

The conversion is part of the backbone, so every caller (the train step, kNN, the
linear probe, fine-tuning, an exported backbone) feeds the usual normalised RGB images
and gets the features the network was trained on.
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from sslax.augment.color import lab_inputs


class LightnessInput(nn.Module):
  """Runs `net` on the L channel (L / 50 - 1) of normalised RGB images.

  Attributes:
    net: the backbone proper ((B, H, W, 1) -> (B, D)).
    mean, std: the images' per-channel normalisation (config.data.mean/std).
  """

  net: nn.Module
  mean: Sequence[float]
  std: Sequence[float]

  def __call__(self, x, train: bool = True):
    lightness, _ = lab_inputs(x, self.mean, self.std)
    return self.net(lightness.astype(x.dtype), train=train)


class SplitBrainBackbone(nn.Module):
  """Two sub-networks on complementary channels, L -> f_L and ab -> f_ab, features [f_L, f_ab].

  Zhang, Isola & Efros (2017): each half is trained to predict the other's channels; the
  representation is the concatenation.

  Attributes:
    lightness_net: (B, H, W, 1) -> (B, D_L).
    colour_net: (B, H, W, 2) -> (B, D_ab).
    mean, std: the images' per-channel normalisation.
  """

  lightness_net: nn.Module
  colour_net: nn.Module
  mean: Sequence[float]
  std: Sequence[float]

  def __call__(self, x, train: bool = True):
    lightness, colour = lab_inputs(x, self.mean, self.std)
    return jnp.concatenate([self.lightness_net(lightness.astype(x.dtype), train=train),
                            self.colour_net(colour.astype(x.dtype), train=train)], axis=-1)
