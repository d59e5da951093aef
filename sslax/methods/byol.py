"""BYOL (Grill et al. 2020): predict an EMA target network's projection of the other view."""
from __future__ import annotations

from sslax import losses
from sslax.config_utils import Field
from sslax.methods.common import MomentumTargetMethod, multi_view_forward, projection_output


class BYOL(MomentumTargetMethod):
  """Online network (backbone, projector, predictor) regresses the target's projection.

  Loss: the symmetric normalised regression sum_{(i,j)} 2 - 2 cos(p_i, z'_j) over the view
  pairs (1,2) and (2,1), z' from the target, whose tau rises from `byol.base_momentum` to 1
  on a cosine schedule over training (deepmind-research/byol).
  """

  name = "byol"
  heads = ("projector", "predictor")
  config_fields = {"base_momentum": Field(0.99, "target EMA momentum at step 0 (cosine to 1)", ge=0, le=1)}

  def __init__(self, config, **schedule):
    super().__init__(config, **schedule)
    self.base_momentum = float(self.settings.base_momentum)

  def loss(self, model, params, batch_stats, method_state, views, *, step, axis_name, batch=None):
    del step, batch
    online, new_stats = multi_view_forward(model, params, batch_stats, views)
    target = self.target_forward(model, method_state, batch_stats, views)
    neg_cos = [losses.negative_cosine(online[i]["prediction"], target[1 - i]["projection"], axis_name)
               for i in (0, 1)]
    loss = sum(2.0 + 2.0 * c for c in neg_cos)
    metrics = {"prediction_cosine": -(neg_cos[0] + neg_cos[1]) / 2}
    return projection_output(loss, online, new_stats, method_state, metrics)
