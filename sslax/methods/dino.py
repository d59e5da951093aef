"""DINO (Caron et al. 2021): self-distillation from an EMA teacher with centring and sharpening."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from sslax import losses, parallel
from sslax.config_utils import Field
from sslax.methods.common import MomentumTargetMethod, freeze_prototypes, multi_view_forward, projection_output


class DINO(MomentumTargetMethod):
  """The student sees every crop (2 global + N local), the teacher (EMA of the student,
  cosine momentum from `dino.base_momentum` to 1) only the global ones.

  The teacher's outputs are centred with a running center (in method_state) whose batch
  mean is taken over the whole global batch (psum over devices), then sharpened with a
  temperature warmed up linearly from `dino.warmup_teacher_temperature` to
  `dino.teacher_temperature` over `dino.warmup_teacher_temperature_epochs`. The student's
  last layer (the prototypes) is frozen for `dino.freeze_last_layer_epochs`.
  """

  name = "dino"
  heads = ("projector", "prototypes")
  supports_multicrop = True
  config_fields = {
      "base_momentum": Field(0.996, "teacher EMA momentum at step 0 (cosine to 1)", ge=0, le=1),
      "student_temperature": Field(0.1, "student softmax temperature", gt=0),
      "teacher_temperature": Field(0.04, "teacher temperature after the warm-up", gt=0),
      "warmup_teacher_temperature": Field(0.04, "teacher temperature at step 0", gt=0),
      "warmup_teacher_temperature_epochs": Field(0.0, "linear teacher-temperature warm-up", ge=0),
      "center_momentum": Field(0.9, "EMA momentum of the teacher centre", ge=0, lt=1),
      "freeze_last_layer_epochs": Field(1.0, "epochs without gradient into the prototypes", ge=0),
  }

  def __init__(self, config, **schedule):
    super().__init__(config, **schedule)
    c = self.settings
    self.base_momentum = float(c.base_momentum)
    self.student_temperature = float(c.student_temperature)
    self.teacher_temperature = float(c.teacher_temperature)
    self.warmup_teacher_temperature = float(c.warmup_teacher_temperature)
    self.warmup_steps = int(round(c.warmup_teacher_temperature_epochs * self.steps_per_epoch))
    self.center_momentum = float(c.center_momentum)
    self.freeze_steps = int(round(c.freeze_last_layer_epochs * self.steps_per_epoch))

  def init_state(self, params, rng):
    state = super().init_state(params, rng)
    return dict(state, center=jnp.zeros((self.config.model.num_prototypes,), jnp.float32))

  def teacher_temperature_at(self, step: jax.Array) -> jax.Array:
    """Linear warm-up of the teacher temperature, then constant."""
    if self.warmup_steps <= 0:
      return jnp.float32(self.teacher_temperature)
    frac = jnp.minimum(step.astype(jnp.float32) / self.warmup_steps, 1.0)
    return self.warmup_teacher_temperature + frac * (self.teacher_temperature - self.warmup_teacher_temperature)

  def loss(self, model, params, batch_stats, method_state, views, *, step, axis_name, batch=None):
    del batch
    params = freeze_prototypes(params, step < self.freeze_steps)
    student, new_stats = multi_view_forward(model, params, batch_stats, views)
    teacher = self.target_forward(model, method_state, batch_stats, views[:self.num_views])
    teacher_scores = [t["scores"] for t in teacher]
    temperature = self.teacher_temperature_at(step)
    loss = losses.dino([s["scores"] for s in student], teacher_scores, method_state["center"],
                       student_temperature=self.student_temperature, teacher_temperature=temperature,
                       axis_name=axis_name)
    # Center: EMA of the teacher's mean output over both global views of the global batch.
    stacked = jnp.concatenate(teacher_scores)
    batch_center = parallel.global_sum(jnp.sum(stacked, axis=0), axis_name) / parallel.global_count(
        stacked.shape[0], axis_name)
    center = self.center_momentum * method_state["center"] + (1 - self.center_momentum) * batch_center
    metrics = {"teacher_temperature": temperature,
               "teacher_entropy": _mean_entropy(teacher_scores[0], method_state["center"], temperature, axis_name)}
    return projection_output(loss, student, new_stats, dict(method_state, center=center), metrics,
                             num_views=self.num_views)


def _mean_entropy(scores, center, temperature, axis_name):
  """Mean entropy of the teacher's centred, sharpened distribution (log K: uniform collapse; 0: one-hot)."""
  p = jax.nn.softmax((scores - center) / temperature, axis=-1)
  return parallel.global_mean(-jnp.sum(p * jnp.log(p + 1e-12), axis=-1), axis_name)
