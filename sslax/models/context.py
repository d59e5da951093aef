"""The context network of Contrastive Predictive Coding (Oord et al. 2018; Henaff et al. 2020).

CPC encodes every patch of a grid of overlapping patches into a vector z[i, j], summarises
the rows above and including row i into a context c[i, j] with a PixelCNN-style masked
convolution stack, and predicts the patch vectors k rows further down linearly from it:
z_hat[i + k, j] = W_k c[i, j]. `ContextPredictor` is that context network with the W_k; it
takes the SSLModel's classifier slot (sslax.models.build_model with a `cpc_context` head
config), whose input is each image's concatenated patch projections in row-major order.
"""
from __future__ import annotations

import math

import flax.linen as nn
import jax.numpy as jnp

KIND = "cpc_context"  # The head config's `kind` that selects ContextPredictor for the classifier slot.


class ContextNetwork(nn.Module):
  """A PixelCNN-style residual stack over a grid: output row i sees input rows <= i only.

  Each of `depth` residual blocks, as in CPC v2's pseudo-code (Henaff et al. 2020, appendix
  A.2): a 1x1 convolution to `width` channels, a 1x3 convolution along the row, a 2x1
  convolution over (row above, this row) after one zero row is padded on top (so nothing
  below a row reaches it: together a 2x3 kernel, a 3x3 kernel masked below its centre row),
  and a 1x1 convolution back to the input's channels, added to the input; ReLUs between
  them and after the last block. No normalisation: a batch statistic would let rows below
  leak into the context (CPC v2 replaces BatchNorm by layer norm for the same reason).

  Attributes:
    width: channels inside a residual block.
    depth: residual blocks; each widens the receptive field by one row up and one column
      to each side.
  """

  width: int = 256
  depth: int = 5

  @nn.compact
  def __call__(self, z):
    """Args:
      z: (n, G, G, d) grid of patch vectors, rows first.

    Returns:
      (n, G, G, d) float32 context c; c[:, i] depends on z[:, :i + 1] only.
    """
    x = z.astype(jnp.float32)
    channels = x.shape[-1]
    for b in range(self.depth):
      y = nn.relu(nn.Conv(self.width, (1, 1), name=f"block{b + 1}_in")(x))
      y = nn.relu(nn.Conv(self.width, (1, 3), padding=((0, 0), (1, 1)), name=f"block{b + 1}_row")(y))
      # Padding one row on top only: output row i reads input rows i - 1 and i.
      y = nn.relu(nn.Conv(self.width, (2, 1), padding=((1, 0), (0, 0)), name=f"block{b + 1}_up")(y))
      x = x + nn.Conv(channels, (1, 1), name=f"block{b + 1}_out")(y)
    return nn.relu(x)


class ContextPredictor(nn.Module):
  """CPC's context network and its linear predictions W_k, one per prediction step.

  Attributes:
    grid: G, the patch grid's side.
    num_steps: K, the number of prediction offsets (the method's `steps`).
    width: channels inside the context network's residual blocks.
    depth: residual blocks of the context network.
  """

  grid: int
  num_steps: int
  width: int = 256
  depth: int = 5

  @nn.compact
  def __call__(self, z, train: bool = True):
    """Args:
      z: (n, G * G * d) each image's concatenated patch vectors, row-major over the grid
        (the classifier slot's input), or the (n, G, G, d) grid itself.
      train: unused (no batch statistics), accepted like every head.

    Returns:
      (n, K, G, G, d) float32 predictions p; p[:, s, i, j] = W_s c[:, i, j] predicts
      z[:, i + steps[s], j] (rows i + steps[s] >= G predict nothing and are left to the loss).
    """
    del train
    g = self.grid
    if z.ndim == 2:
      if z.shape[-1] % (g * g):
        raise ValueError(f"ContextPredictor(grid={g}) reads {g}x{g} patch vectors per row; got {z.shape[-1]} values.")
      z = z.reshape(z.shape[0], g, g, z.shape[-1] // (g * g))
    c = ContextNetwork(self.width, self.depth, name="context")(z)
    # A linear map per step, no bias: z_hat = W_k c (Oord et al. 2018, eq. 3 / CPC v2's formula).
    p = nn.DenseGeneral((self.num_steps, z.shape[-1]), use_bias=False, name="predictions")(c)  # (n, G, G, K, d)
    return jnp.moveaxis(p, 3, 1)


def build_context_head(head_cfg, classifier_group: int) -> ContextPredictor:
  """The ContextPredictor of a `cpc_context` head config (sslax.presets.context_head).

  Args:
    head_cfg: width, depth and num_steps.
    classifier_group: patches per image (G * G), the number of inputs one row reads.

  Returns:
    ContextPredictor over a G x G grid.
  """
  grid = math.isqrt(classifier_group)
  if grid * grid != classifier_group:
    raise ValueError(f"A CPC context head reads a square grid of patches; got classifier_group={classifier_group}.")
  return ContextPredictor(grid=grid, num_steps=head_cfg.num_steps, width=head_cfg.width, depth=head_cfg.depth)
