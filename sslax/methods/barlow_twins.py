"""Barlow Twins (Zbontar et al. 2021): cross-correlation of the two views' embeddings -> identity."""
from __future__ import annotations

from sslax import losses
from sslax.config_utils import Field
from sslax.methods.common import TwoViewMethod


class BarlowTwins(TwoViewMethod):
  """Standardisation and cross-correlation use global-batch statistics (psum over devices)."""

  name = "barlow_twins"
  config_fields = {"lambd": Field(5e-3, "weight of the off-diagonal (redundancy) term", ge=0)}

  def pair_loss(self, z1, z2, axis_name):
    return losses.barlow_twins(z1, z2, lambd=float(self.settings.lambd), axis_name=axis_name)
