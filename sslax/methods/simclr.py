"""SimCLR (Chen et al. 2020): NT-Xent between two views over the global batch."""
from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp

from sslax import losses


class SimCLR:
  """Both views go through the encoder as one batch of 2n images, so BatchNorm sees the
  same statistics as the paper's implementation (global over both views and all devices)."""

  num_views = 2

  def __init__(self, config):
    self.temperature = float(config.simclr.temperature)

  def init_state(self, params: Any, rng: jax.Array) -> dict:
    del params, rng  # SimCLR has no state besides the encoder.
    return {}

  def loss(self, model, params, batch_stats, method_state, views: Sequence[jax.Array], *,
           axis_name: str | None) -> tuple[jax.Array, tuple[Any, dict[str, jax.Array], jax.Array]]:
    """NT-Xent on the projections of two views.

    Args:
      model: SSLModel (backbone + projector).
      params, batch_stats: model variables.
      method_state: unused.
      views: two (n_local, H, W, 3) normalised images.
      axis_name: data axis for the collectives.

    Returns:
      (loss, (new_batch_stats, metrics, features)), features being the backbone output of
      the first view (n_local, D), for the online probe.
    """
    del method_state
    n = views[0].shape[0]
    out, updates = model.apply({"params": params, "batch_stats": batch_stats},
                               jnp.concatenate(views, axis=0), train=True, mutable=["batch_stats"])
    z = out["projection"]
    loss, metrics = losses.nt_xent(z[:n], z[n:], temperature=self.temperature, axis_name=axis_name)
    metrics["embedding_std"] = losses.embedding_std(z, axis_name)
    return loss, (updates["batch_stats"], metrics, out["features"][:n])

  def post_update(self, state):
    return state
