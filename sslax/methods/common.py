"""Pieces shared by the methods: multi-view forward passes, EMA targets, schedules, and the
two method shapes most methods take (TwoViewMethod, MomentumTargetMethod)."""
from __future__ import annotations

import math
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import optax

from sslax.methods.base import LossOutput, Method

# Parameter groups a momentum target network copies from the online one (never the predictor).
TARGET_MODULES = ("backbone", "projector", "prototypes")


def multi_view_forward(model, params, batch_stats, views: Sequence[jax.Array], *, predict: bool = True,
                       train: bool = True) -> tuple[list[dict[str, jax.Array]], Any]:
  """Every view through the model; consecutive views of one resolution go as one batch.

  One batch per resolution gives BatchNorm the statistics of all those views together
  (global over devices through the model's bn_axis_name), as SimCLR's and BYOL's code
  do, and lets multi-crop feed 2 global and N smaller local crops (DINO's MultiCropWrapper).

  Args:
    model: the SSLModel.
    params: its params (online, or a target's subset with predict=False).
    batch_stats: BatchNorm statistics ({} for BN-free models).
    views: list of (n_local, H_v, W_v, 3) normalised images.
    predict: run the predictor head.
    train: batch statistics in BatchNorm.

  Returns:
    (per-view output dicts as returned by the model, updated batch_stats).
  """
  outputs: list[dict[str, jax.Array]] = []
  start = 0
  while start < len(views):
    end = start
    while end < len(views) and views[end].shape == views[start].shape:
      end += 1
    out, updates = model.apply({"params": params, "batch_stats": batch_stats}, jnp.concatenate(views[start:end]),
                               train=train, predict=predict, mutable=["batch_stats"])
    batch_stats = updates.get("batch_stats", batch_stats)
    n = views[start].shape[0]
    outputs += [jax.tree.map(lambda a, i=i: a[i * n:(i + 1) * n], out) for i in range(end - start)]
    start = end
  return outputs, batch_stats


def target_subset(params: dict) -> dict:
  """The parameter groups a momentum target copies (backbone, projector, prototypes)."""
  return {k: v for k, v in params.items() if k in TARGET_MODULES}


def copy_tree(tree: Any) -> Any:
  """A copy with its own buffers (a target must not alias the donated online params)."""
  return jax.tree.map(lambda x: x + jnp.zeros_like(x), tree)


def ema_update(target: Any, online: Any, momentum: jax.Array | float) -> Any:
  """target <- momentum * target + (1 - momentum) * online, as a pure tree map."""
  return optax.incremental_update(online, target, step_size=1.0 - momentum)


def cosine_momentum(step: jax.Array, total_steps: int, base: float, final: float = 1.0) -> jax.Array:
  """BYOL's schedule: base at step 0, rising along a half cosine to `final` at total_steps.

  tau(k) = final - (final - base) * (cos(pi k / K) + 1) / 2.
  """
  progress = jnp.minimum(step.astype(jnp.float32) / max(total_steps, 1), 1.0)
  return final - (final - base) * (jnp.cos(math.pi * progress) + 1.0) / 2.0


class TwoViewMethod(Method):
  """A stateless method whose loss compares the projections of two views (SimCLR, Barlow
  Twins, VICReg). Subclasses implement `pair_loss(z1, z2, axis_name) -> (loss, metrics)`."""

  def pair_loss(self, z1, z2, axis_name):
    raise NotImplementedError

  def loss(self, model, params, batch_stats, method_state, views: Sequence[jax.Array], *, step,
           axis_name: str | None, batch=None) -> LossOutput:
    """`pair_loss` of the two views' projections (see Method.loss)."""
    del step, batch
    outputs, new_stats = multi_view_forward(model, params, batch_stats, views)
    loss, metrics = self.pair_loss(outputs[0]["projection"], outputs[1]["projection"], axis_name)
    return projection_output(loss, outputs, new_stats, method_state, metrics)


class MomentumTargetMethod(Method):
  """A method with an EMA target network kept in method_state['target_params'].

  The target starts as a copy of the online backbone/projector(/prototypes) and after each
  optimizer step moves towards them with momentum tau from `momentum_schedule`; it is only
  ever read under stop_gradient, so no gradient reaches it.
  """

  base_momentum = 0.99
  final_momentum = 1.0  # Equal to base_momentum: constant momentum (MoCo v2).

  def init_state(self, params: Any, rng: jax.Array) -> dict:
    del rng
    return {"target_params": copy_tree(target_subset(params))}

  def momentum(self, step: jax.Array) -> jax.Array:
    """tau for the update that follows optimizer step `step` (0-based)."""
    return cosine_momentum(step, self.total_steps, self.base_momentum, self.final_momentum)

  def target_forward(self, model, method_state, batch_stats, views):
    """Target outputs (gradient stopped) of `views`; the target's BN statistics are discarded
    (only the online network is evaluated)."""
    outs, _ = multi_view_forward(model, method_state["target_params"], batch_stats, views, predict=False)
    return jax.lax.stop_gradient(outs)

  def post_update(self, state):
    tau = self.momentum(state.step - 1)  # state.step already counts the update just applied.
    target = ema_update(state.method_state["target_params"], target_subset(state.params), tau)
    return state.replace(method_state=dict(state.method_state, target_params=target))


def projection_output(loss: jax.Array, outputs: Sequence[dict[str, jax.Array]], batch_stats, method_state,
                      metrics: dict | None = None, num_views: int | None = None) -> LossOutput:
  """The usual LossOutput: first view's features for the probe, the projections of the first
  `num_views` views (default all) for the collapse monitors."""
  return LossOutput(loss=loss, batch_stats=batch_stats, method_state=method_state, features=outputs[0]["features"],
                    embeddings=jnp.concatenate([o["projection"] for o in outputs[:num_views]]),
                    metrics=metrics or {})


def freeze_prototypes(params: dict, frozen: jax.Array) -> dict:
  """params with no gradient into params['prototypes'] while `frozen` (a traced bool).

  SwAV freezes its prototypes and DINO its last layer during the first epoch; the forward
  is unchanged, only the gradient is cut (jnp.where routes it to the stopped branch).
  """
  if "prototypes" not in params:
    return params
  stopped = jax.tree.map(lambda w: jnp.where(frozen, jax.lax.stop_gradient(w), w), params["prototypes"])
  return dict(params, prototypes=stopped)
