"""SCARF (Bahri et al. 2022, "SCARF: Self-Supervised Contrastive Learning using Random Feature
Corruption"): contrastive learning on tables.

Each row's positive view is the row with a random subset of its features (`scarf.corruption_rate`
of them, 0.6 by default; exactly round(rate x columns) per row) replaced by draws from each
feature's empirical marginal over the training split. The draws come with the batch
(sslax.data.tabular: one uniformly drawn training row per (row, column), from (seed, step));
which columns are replaced is drawn on the device from (seed, step, global row index). Both
views go through the MLP encoder and projection head as one batch, and the NT-Xent loss
(SimCLR's, temperature `scarf.temperature`) contrasts them over the global batch, negatives
all-gathered from every device.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from sslax import losses
from sslax.config_utils import Field
from sslax.methods.common import TwoViewMethod, method_keys

_CORRUPTION_STREAM = 0x5CA7


def corruption_mask(keys: jax.Array, num_columns: int, rate: float) -> jax.Array:
  """Which columns of each row are corrupted: exactly round(rate * num_columns) per row, a
  uniformly random subset drawn from the row's key.

  Args:
    keys: (n, 2) per-row PRNG keys.
    num_columns: columns per row.
    rate: corruption rate in (0, 1].

  Returns:
    bool (n, num_columns).
  """
  count = int(round(rate * num_columns))
  ranks = jax.vmap(lambda k: jnp.argsort(jax.random.permutation(k, num_columns)))(keys)
  return ranks < count


def corrupt(numeric: jax.Array, categorical: jax.Array, donor_numeric: jax.Array, donor_categorical: jax.Array,
            mask: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Replaces the masked columns (numeric first, then categorical) by the donors' values."""
  n_num = numeric.shape[1]
  return (jnp.where(mask[:, :n_num], donor_numeric, numeric),
          jnp.where(mask[:, n_num:], donor_categorical, categorical))


class SCARF(TwoViewMethod):
  """The original row and its corrupted copy are the two views (see the module docstring)."""

  name = "scarf"
  modality = "table"
  num_views = 1  # The trainer hands over the row; the corrupted view is made here.
  config_fields = {
      "corruption_rate": Field(0.6, "fraction of a row's features replaced by marginal draws", gt=0, le=1),
      "temperature": Field(1.0, "NT-Xent softmax temperature (the paper's InfoNCE uses 1.0)", gt=0),
  }

  def corrupted_view(self, batch: dict, step: jax.Array, axis_name: str | None) -> dict[str, jax.Array]:
    """This device's rows with round(rate x columns) features each replaced by marginal draws."""
    numeric, categorical = batch["numeric"], batch["categorical"]
    keys = method_keys(self.config, step, numeric.shape[0], axis_name, _CORRUPTION_STREAM)
    mask = corruption_mask(keys, numeric.shape[1] + categorical.shape[1], float(self.settings.corruption_rate))
    numeric, categorical = corrupt(numeric, categorical, batch["donor_numeric"], batch["donor_categorical"], mask)
    return {"numeric": numeric, "categorical": categorical}

  def loss(self, model, params, batch_stats, method_state, views, *, step, axis_name, batch=None):
    views = [views[0], self.corrupted_view(batch, step, axis_name)]
    return super().loss(model, params, batch_stats, method_state, views, step=step, axis_name=axis_name, batch=batch)

  def pair_loss(self, z1, z2, axis_name):
    return losses.nt_xent(z1, z2, temperature=float(self.settings.temperature), axis_name=axis_name)
