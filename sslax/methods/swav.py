"""SwAV (Caron et al. 2020): swapped prediction of Sinkhorn-Knopp cluster codes, multi-crop."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from sslax import losses, parallel
from sslax.config_utils import Field
from sslax.methods.common import Method, freeze_prototypes, multi_view_forward, projection_output
from sslax.methods.moco import enqueue


class SwAV(Method):
  """Codes of the two global crops come from Sinkhorn-Knopp over the global batch (every
  normalisation sums over all devices); every other crop, global or local, predicts them.

  Prototypes are L2-normalised (see models.Prototypes) and get no gradient for the first
  `swav.freeze_prototypes_epochs`. With `swav.queue_size > 0`, a queue of the global
  crops' embeddings from earlier batches (one per global crop, filled from
  `swav.queue_start_epoch` on, all-gathered so every device holds the same queue) joins
  the Sinkhorn problem once it is full; each device adds its 1/n_devices slice of it, so
  the transport problem is the single-device one over queue + global batch.
  """

  name = "swav"
  heads = ("projector", "prototypes")
  supports_multicrop = True
  config_fields = {
      "temperature": Field(0.1, "softmax temperature of the swapped prediction", gt=0),
      "epsilon": Field(0.05, "Sinkhorn entropy regularisation", gt=0),
      "sinkhorn_iterations": Field(3, "Sinkhorn-Knopp iterations", gt=0, integer=True),
      "freeze_prototypes_epochs": Field(1.0, "epochs without gradient into the prototypes", ge=0),
      "queue_size": Field(0, "queued embeddings per global crop (0: no queue), a multiple of batch_size", ge=0,
                          integer=True),
      "queue_start_epoch": Field(15.0, "epoch from which the queue is filled", ge=0),
  }

  def __init__(self, config, **schedule):
    super().__init__(config, **schedule)
    c = self.settings
    self.temperature = float(c.temperature)
    self.epsilon = float(c.epsilon)
    self.iterations = int(c.sinkhorn_iterations)
    self.freeze_steps = int(round(c.freeze_prototypes_epochs * self.steps_per_epoch))
    self.queue_size = int(c.queue_size)
    self.queue_start_step = int(round(c.queue_start_epoch * self.steps_per_epoch))
    if self.queue_size and self.queue_size % config.batch_size:
      fixed = max(config.batch_size, self.queue_size // config.batch_size * config.batch_size)
      raise ValueError(f"config.swav.queue_size={self.queue_size} must be a multiple of batch_size "
                       f"{config.batch_size}; use e.g. --config.swav.queue_size={fixed} (or 0 for no queue).")

  def init_state(self, params, rng):
    del rng
    if not self.queue_size:
      return {}
    dim = self.config.model.projector.output_dim
    return {"queue": jnp.zeros((self.num_views, self.queue_size, dim), jnp.float32),
            "queue_pointer": jnp.zeros((), jnp.int32), "queue_filled": jnp.zeros((), jnp.int32)}

  def _queue_scores(self, method_state, params, view, axis_name):
    """This device's slice of queue[view], its prototype scores, and whether it is in use."""
    n_dev = parallel.axis_size(axis_name)
    if self.queue_size % n_dev:
      raise ValueError(f"config.swav.queue_size={self.queue_size} must be divisible by the {n_dev} devices.")
    rows = self.queue_size // n_dev
    start = jax.lax.axis_index(axis_name) * rows if axis_name is not None else 0
    queue = jax.lax.dynamic_slice_in_dim(method_state["queue"][view], start, rows)
    kernel = params["prototypes"]["kernel"]
    kernel = kernel / jnp.maximum(jnp.linalg.norm(kernel, axis=0, keepdims=True), 1e-12)
    in_use = method_state["queue_filled"] >= self.queue_size
    return queue @ jax.lax.stop_gradient(kernel), jnp.full((rows,), in_use, jnp.float32)

  def loss(self, model, params, batch_stats, method_state, views, *, step, axis_name, batch=None):
    del batch
    params = freeze_prototypes(params, step < self.freeze_steps)
    outs, new_stats = multi_view_forward(model, params, batch_stats, views)
    scores = [o["scores"] for o in outs]
    n_local = scores[0].shape[0]
    codes = {}
    for i in range(self.num_views):
      if self.queue_size:
        queue_scores, weights = self._queue_scores(method_state, params, i, axis_name)
        all_scores = jnp.concatenate([queue_scores, scores[i]])
        all_weights = jnp.concatenate([weights, jnp.ones((n_local,), jnp.float32)])
        codes[i] = losses.sinkhorn(all_scores, epsilon=self.epsilon, iterations=self.iterations,
                                   axis_name=axis_name, weights=all_weights)[-n_local:]
      else:
        codes[i] = losses.sinkhorn(scores[i], epsilon=self.epsilon, iterations=self.iterations, axis_name=axis_name)
    loss = losses.swapped_prediction(scores, codes, temperature=self.temperature, axis_name=axis_name)
    new_state = method_state
    if self.queue_size:
      new_state = self._enqueue(method_state, [outs[i]["projection"] for i in range(self.num_views)], step, axis_name)
    metrics = {"prototypes_frozen": (step < self.freeze_steps).astype(jnp.float32)}
    return projection_output(loss, outs, new_stats, new_state, metrics, num_views=self.num_views)

  def _enqueue(self, method_state, projections, step, axis_name):
    """Adds the global batch's normalised embeddings of each global crop (from queue_start_step on)."""
    active = step >= self.queue_start_step
    queues, pointer = [], method_state["queue_pointer"]
    for i, z in enumerate(projections):
      z = jax.lax.stop_gradient(losses.l2_normalize(z.astype(jnp.float32)))
      z = parallel.gather_for_state(z, axis_name)
      queue, new_pointer = enqueue(method_state["queue"][i], pointer, z)
      queues.append(jnp.where(active, queue, method_state["queue"][i]))
    filled = jnp.minimum(method_state["queue_filled"] + self.config.batch_size, self.queue_size)
    return {"queue": jnp.stack(queues), "queue_pointer": jnp.where(active, new_pointer, pointer),
            "queue_filled": jnp.where(active, filled, method_state["queue_filled"])}
