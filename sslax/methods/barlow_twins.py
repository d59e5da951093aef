"""Barlow Twins (Zbontar et al. 2021): cross-correlation of the two views' embeddings -> identity."""
from __future__ import annotations

from sslax import losses
from sslax.methods.common import TwoViewMethod


class BarlowTwins(TwoViewMethod):
  """Standardisation and cross-correlation use global-batch statistics (psum over devices)."""

  def __init__(self, config, **schedule):
    super().__init__(config, **schedule)
    self.lambd = float(config.barlow_twins.lambd)

  def pair_loss(self, z1, z2, axis_name):
    return losses.barlow_twins(z1, z2, lambd=self.lambd, axis_name=axis_name)
