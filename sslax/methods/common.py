"""Pieces shared by the methods."""
from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp

from sslax import losses


def two_view_forward(model, params, batch_stats, views: Sequence[jax.Array], axis_name: str | None):
  """Both views through the model as one batch of 2n images (global BN over both views).

  Returns:
    (z1, z2, features of view 1, new batch_stats, {'embedding_std': ...}).
  """
  n = views[0].shape[0]
  out, updates = model.apply({"params": params, "batch_stats": batch_stats}, jnp.concatenate(views, axis=0),
                             train=True, mutable=["batch_stats"])
  z = out["projection"]
  metrics = {"embedding_std": losses.embedding_std(z, axis_name)}
  return z[:n], z[n:], out["features"][:n], updates["batch_stats"], metrics


class TwoViewMethod:
  """A stateless method whose loss compares the projections of two views (SimCLR, Barlow
  Twins, VICReg). Subclasses implement `pair_loss(z1, z2, axis_name) -> (loss, metrics)`."""

  num_views = 2

  def init_state(self, params: Any, rng: jax.Array) -> dict:
    del params, rng  # No state besides the encoder.
    return {}

  def pair_loss(self, z1, z2, axis_name):
    raise NotImplementedError

  def loss(self, model, params, batch_stats, method_state, views: Sequence[jax.Array], *,
           axis_name: str | None) -> tuple[jax.Array, tuple[Any, dict[str, jax.Array], jax.Array]]:
    """The method's loss on two normalised views (n_local, H, W, 3) each.

    Returns:
      (loss, (new_batch_stats, metrics, features)), features being the backbone output of
      the first view (n_local, D), for the online probe.
    """
    del method_state
    z1, z2, features, new_stats, metrics = two_view_forward(model, params, batch_stats, views, axis_name)
    loss, loss_metrics = self.pair_loss(z1, z2, axis_name)
    return loss, (new_stats, dict(metrics, **loss_metrics), features)

  def post_update(self, state):
    return state
