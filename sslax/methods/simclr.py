"""SimCLR (Chen et al. 2020): NT-Xent between two views over the global batch."""
from __future__ import annotations

from sslax import losses
from sslax.methods.common import TwoViewMethod


class SimCLR(TwoViewMethod):
  """Both views go through the encoder as one batch of 2n images, so BatchNorm sees the
  same statistics as the paper's implementation (global over both views and all devices);
  negatives are all-gathered from every device."""

  def __init__(self, config, **schedule):
    super().__init__(config, **schedule)
    self.temperature = float(config.simclr.temperature)

  def pair_loss(self, z1, z2, axis_name):
    return losses.nt_xent(z1, z2, temperature=self.temperature, axis_name=axis_name)
