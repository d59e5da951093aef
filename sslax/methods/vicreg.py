"""VICReg (Bardes et al. 2022): invariance, variance and covariance terms on two views."""
from __future__ import annotations

from sslax import losses
from sslax.methods.common import TwoViewMethod


class VICReg(TwoViewMethod):
  """Variance and covariance are computed over the global batch (psum over devices)."""

  def __init__(self, config, **schedule):
    super().__init__(config, **schedule)
    c = config.vicreg
    self.weights = dict(sim_weight=float(c.sim_weight), var_weight=float(c.var_weight), cov_weight=float(c.cov_weight))

  def pair_loss(self, z1, z2, axis_name):
    return losses.vicreg(z1, z2, axis_name=axis_name, **self.weights)
