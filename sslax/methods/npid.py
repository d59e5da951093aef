"""Instance discrimination, InstDisc / NPID (Wu et al. 2018, "Unsupervised Feature Learning via
Non-Parametric Instance Discrimination"): every image its own class, scored against a memory
bank of all images' embeddings with NCE."""
from __future__ import annotations

import jax

from sslax import losses
from sslax.methods.common import multi_view_forward, projection_output
from sslax.methods.memory_bank import MEMORY_BANK_FIELDS, MemoryBankMethod


class NPID(MemoryBankMethod):
  """One augmented view per image; its L2-normalised projection v_i is the positive of its own
  memory row m_i and is pushed from `num_negatives` other rows, with NCE (MemoryBankMethod);
  then m_i moves to v_i with momentum 0.5. The paper's projection is a single linear layer to
  128 dimensions (mlp_head((), 128)); temperature 0.07, 4096 negatives."""

  name = "npid"
  config_fields = dict(MEMORY_BANK_FIELDS)

  def loss(self, model, params, batch_stats, method_state, views, *, step, axis_name, batch=None):
    outputs, new_stats = multi_view_forward(model, params, batch_stats, views[:1])
    v = losses.l2_normalize(outputs[0]["projection"].astype(jax.numpy.float32))
    loss, log_z, metrics = self.nce(v, batch["index"], method_state, self.negative_indices(step), axis_name)
    new_state = self.update_bank(method_state, v, batch["index"], log_z, axis_name)
    return projection_output(loss, outputs, new_stats, new_state, dict(metrics, log_normalizer=log_z))
