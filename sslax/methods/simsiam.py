"""SimSiam (Chen & He 2021): a predictor and a stop-gradient, no negatives and no target network."""
from __future__ import annotations

import jax

from sslax import losses
from sslax.methods.common import Method, multi_view_forward, projection_output


class SimSiam(Method):
  """Loss D(p1, sg(z2)) / 2 + D(p2, sg(z1)) / 2 with D the negative cosine similarity.

  The paper trains the predictor with a fixed (not decayed) learning rate; configs set
  `optimizer.fixed_lr_modules = ('predictor',)` for that.
  """

  name = "simsiam"
  heads = ("projector", "predictor")

  def loss(self, model, params, batch_stats, method_state, views, *, step, axis_name, batch=None):
    del step, batch
    outputs, new_stats = multi_view_forward(model, params, batch_stats, views)
    (o1, o2) = outputs
    z1, z2 = jax.lax.stop_gradient(o1["projection"]), jax.lax.stop_gradient(o2["projection"])
    loss = (losses.negative_cosine(o1["prediction"], z2, axis_name)
            + losses.negative_cosine(o2["prediction"], z1, axis_name)) / 2
    return projection_output(loss, outputs, new_stats, method_state)
