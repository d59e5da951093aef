"""Optimizers and learning-rate schedules."""
from __future__ import annotations

import math
from typing import Any

import jax
import optax

OPTIMIZERS = ("lars", "sgd", "adamw")
LR_SCALINGS = ("linear", "sqrt", "none")


def decay_mask(params: Any) -> Any:
  """True for weight matrices/kernels, False for biases and BatchNorm scales/offsets.

  SimCLR and BYOL exclude those from weight decay and from LARS adaptation; optax's
  defaults would apply both to every parameter.
  """
  return jax.tree_util.tree_map_with_path(
      lambda path, _: getattr(path[-1], "key", None) in ("kernel", "embedding"), params)


def scaled_learning_rate(base_lr: float, batch_size: int, scaling: str) -> float:
  """base_lr x batch/256 ('linear'), x sqrt(batch/256) ('sqrt') or unchanged ('none')."""
  if scaling == "linear":
    return base_lr * batch_size / 256.0
  if scaling == "sqrt":
    return base_lr * math.sqrt(batch_size / 256.0)
  if scaling == "none":
    return base_lr
  raise ValueError(f"Unknown optimizer.lr_scaling {scaling!r}; valid choices: {', '.join(LR_SCALINGS)}.")


def learning_rate_schedule(peak_lr: float, total_steps: int, warmup_steps: int) -> optax.Schedule:
  """Linear warm-up from 0 to peak_lr, then cosine decay to 0 at total_steps."""
  warmup_steps = min(warmup_steps, total_steps)
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=peak_lr, warmup_steps=warmup_steps,
      decay_steps=max(total_steps, warmup_steps + 1), end_value=0.0)


def build_optimizer(opt_cfg, *, batch_size: int, total_steps: int,
                    warmup_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """The optimizer named by `opt_cfg.name` and its schedule.

  Args:
    opt_cfg: `name` (lars | sgd | adamw), `base_learning_rate`, `lr_scaling`, `weight_decay`,
      `momentum`, `trust_coefficient` (LARS), `b1`/`b2` (AdamW), optional `fixed_lr_modules`
      (top-level param groups, e.g. ('predictor',), trained at the constant peak rate).
    batch_size: global batch size, for learning-rate scaling.
    total_steps: length of the cosine schedule.
    warmup_steps: linear warm-up steps.

  Returns:
    (optax transformation, learning-rate schedule).
  """
  peak = scaled_learning_rate(opt_cfg.base_learning_rate, batch_size, opt_cfg.lr_scaling)
  schedule = learning_rate_schedule(peak, total_steps, warmup_steps)
  tx = _optimizer(opt_cfg, schedule)
  fixed = tuple(opt_cfg.get("fixed_lr_modules", ()) or ())
  if fixed:
    # SimSiam: the predictor keeps the peak learning rate (no warm-up, no decay).
    def labels(params):
      return {k: jax.tree.map(lambda _, k=k: "fixed" if k in fixed else "scheduled", v) for k, v in params.items()}

    tx = optax.multi_transform({"scheduled": tx, "fixed": _optimizer(opt_cfg, peak)}, labels)
  return tx, schedule


def _optimizer(opt_cfg, learning_rate) -> optax.GradientTransformation:
  """The optimizer named by opt_cfg.name with `learning_rate` (a float or a schedule)."""
  name = opt_cfg.name
  if name == "lars":
    return optax.lars(learning_rate, weight_decay=opt_cfg.weight_decay, weight_decay_mask=decay_mask,
                      trust_coefficient=opt_cfg.trust_coefficient, trust_ratio_mask=decay_mask,
                      momentum=opt_cfg.momentum)
  if name == "sgd":
    return optax.chain(optax.add_decayed_weights(opt_cfg.weight_decay, mask=decay_mask),
                       optax.sgd(learning_rate, momentum=opt_cfg.momentum, nesterov=opt_cfg.get("nesterov", False)))
  if name == "adamw":
    return optax.adamw(learning_rate, b1=opt_cfg.b1, b2=opt_cfg.b2, weight_decay=opt_cfg.weight_decay, mask=decay_mask)
  raise ValueError(f"Unknown optimizer.name {name!r}; valid choices: {', '.join(OPTIMIZERS)}.")
