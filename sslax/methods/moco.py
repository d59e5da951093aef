"""MoCo v2 (Chen et al. 2020, queue of keys) and MoCo v3 (Chen, Xie & He 2021, in-batch keys)."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from sslax import losses, parallel
from sslax.config_utils import Field
from sslax.methods.common import MomentumTargetMethod, multi_view_forward, projection_output


def enqueue(queue: jax.Array, pointer: jax.Array, keys: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Writes `keys` (m, d) into the ring buffer `queue` (K, d) at `pointer`; K is a multiple of m.

  Returns:
    (new queue, (pointer + m) mod K).
  """
  queue = jax.lax.dynamic_update_slice(queue, keys.astype(queue.dtype), (pointer, jnp.zeros_like(pointer)))
  return queue, (pointer + keys.shape[0]) % queue.shape[0]


class MoCoV2(MomentumTargetMethod):
  """Query encoder + momentum key encoder + a queue of K negatives.

  The key encoder's momentum goes from `moco_v2.base_momentum` to `moco_v2.final_momentum` on a
  cosine schedule (equal values: MoCo v2's constant 0.999; 0.99 -> 0.999: solo-learn's MoCo v2+).

  The queue (K, d) and its pointer live in method_state; every step it receives the keys of
  the *whole global batch* (all-gathered, in global-batch order), so all devices hold the
  same queue and it matches a single-device run. K must be a multiple of the keys enqueued
  per step (global batch x number of loss terms), so a write never straddles the end.

  Shuffle-BN: MoCo shuffles keys across GPUs so that per-device BatchNorm cannot leak which
  sample is the positive through sub-batch statistics. Here BatchNorm is global (statistics
  over the whole global batch of each forward pass, as SimCLR's global BN), which removes
  that per-device signal in the same way; the key encoder's BN uses its own batch statistics.
  """

  name = "moco_v2"
  config_fields = {
      "temperature": Field(0.2, "InfoNCE softmax temperature", gt=0),
      "queue_size": Field(65536, "negatives in the queue, a multiple of the keys enqueued per step", gt=0,
                          integer=True),
      "symmetric": Field(True, "both view orders as queries (MoCo v2+) or one", choices=(True, False)),
      "base_momentum": Field(0.999, "key-encoder EMA momentum at step 0", ge=0, le=1),
      "final_momentum": Field(0.999, "key-encoder EMA momentum at the end (cosine schedule)", ge=0, le=1),
  }

  def __init__(self, config, **schedule):
    super().__init__(config, **schedule)
    c = self.settings
    self.temperature = float(c.temperature)
    self.base_momentum = float(c.base_momentum)
    self.final_momentum = float(c.final_momentum)
    self.queue_size = int(c.queue_size)
    self.pairs = ((0, 1), (1, 0)) if c.symmetric else ((0, 1),)
    per_step = config.batch_size * len(self.pairs)
    if self.queue_size <= 0 or self.queue_size % per_step:
      fixed = max(per_step, self.queue_size // per_step * per_step)
      raise ValueError(
          f"config.moco_v2.queue_size={self.queue_size} must be a positive multiple of the {per_step} keys "
          f"enqueued per step (batch_size {config.batch_size} x {len(self.pairs)} loss term(s)); use e.g. "
          f"--config.moco_v2.queue_size={fixed}.")

  def init_state(self, params, rng):
    state = super().init_state(params, rng)
    dim = self.config.model.projector.output_dim
    queue = losses.l2_normalize(jax.random.normal(rng, (self.queue_size, dim), jnp.float32))
    return dict(state, queue=queue, queue_pointer=jnp.zeros((), jnp.int32))

  def loss(self, model, params, batch_stats, method_state, views, *, step, axis_name, batch=None):
    del step, batch
    online, new_stats = multi_view_forward(model, params, batch_stats, views, predict=False)
    target = self.target_forward(model, method_state, batch_stats, views)
    loss, top1, keys = 0.0, 0.0, []
    for i, j in self.pairs:
      k = target[j]["projection"]
      term, m = losses.info_nce_with_queue(online[i]["projection"], k, method_state["queue"],
                                           temperature=self.temperature, axis_name=axis_name)
      loss, top1 = loss + term / len(self.pairs), top1 + m["contrastive_top1"] / len(self.pairs)
      keys.append(losses.l2_normalize(k))
    gathered = jnp.concatenate([parallel.gather_for_state(jax.lax.stop_gradient(k), axis_name) for k in keys])
    queue, pointer = enqueue(method_state["queue"], method_state["queue_pointer"], gathered)
    new_state = dict(method_state, queue=queue, queue_pointer=pointer)
    return projection_output(loss, online, new_stats, new_state, {"contrastive_top1": top1})


class MoCoV3(MomentumTargetMethod):
  """Symmetric InfoNCE of each view's prediction against the other view's all-gathered
  momentum keys (no queue); momentum from `moco_v3.base_momentum` to 1 on a cosine schedule."""

  name = "moco_v3"
  heads = ("projector", "predictor")
  config_fields = {"temperature": Field(0.2, "InfoNCE softmax temperature", gt=0),
                   "base_momentum": Field(0.99, "key-encoder EMA momentum at step 0 (cosine to 1)", ge=0, le=1)}

  def __init__(self, config, **schedule):
    super().__init__(config, **schedule)
    self.temperature = float(self.settings.temperature)
    self.base_momentum = float(self.settings.base_momentum)

  def loss(self, model, params, batch_stats, method_state, views, *, step, axis_name, batch=None):
    del step, batch
    online, new_stats = multi_view_forward(model, params, batch_stats, views)
    target = self.target_forward(model, method_state, batch_stats, views)
    loss, top1 = 0.0, 0.0
    for i, j in ((0, 1), (1, 0)):
      term, m = losses.info_nce_gathered(online[i]["prediction"], target[j]["projection"],
                                         temperature=self.temperature, axis_name=axis_name)
      loss, top1 = loss + term, top1 + m["contrastive_top1"] / 2
    return projection_output(loss, online, new_stats, method_state, {"contrastive_top1": top1})
