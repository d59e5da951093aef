"""SimCLR (Chen et al. 2020): NT-Xent between two views over the global batch."""
from __future__ import annotations

from sslax import losses
from sslax.config_utils import Field
from sslax.methods.common import TwoViewMethod


class SimCLR(TwoViewMethod):
  """Both views go through the encoder as one batch of 2n images, so BatchNorm sees the
  same statistics as the paper's implementation (global over both views and all devices);
  negatives are all-gathered from every device."""

  name = "simclr"
  config_fields = {"temperature": Field(0.5, "NT-Xent softmax temperature", gt=0)}

  def pair_loss(self, z1, z2, axis_name):
    return losses.nt_xent(z1, z2, temperature=float(self.settings.temperature), axis_name=axis_name)
