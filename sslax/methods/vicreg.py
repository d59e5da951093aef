"""VICReg (Bardes et al. 2022): invariance, variance and covariance terms on two views."""
from __future__ import annotations

from sslax import losses
from sslax.config_utils import Field
from sslax.methods.common import TwoViewMethod


class VICReg(TwoViewMethod):
  """Variance and covariance are computed over the global batch (psum over devices)."""

  name = "vicreg"
  config_fields = {"sim_weight": Field(25.0, "invariance (MSE) weight", ge=0),
                   "var_weight": Field(25.0, "variance hinge weight", ge=0),
                   "cov_weight": Field(1.0, "covariance weight", ge=0)}

  def pair_loss(self, z1, z2, axis_name):
    weights = {k: float(self.settings[k]) for k in self.config_fields}
    return losses.vicreg(z1, z2, axis_name=axis_name, **weights)
