"""Exemplar-CNN (Dosovitskiy et al. 2014): every seed image is a class of its own."""
from __future__ import annotations

from sslax.config_utils import ConfigError, Field
from sslax.methods.base import Method
from sslax.methods.common import classification_loss, multi_view_forward, projection_output


class Exemplar(Method):
  """Classify heavily augmented views of N seed images into N surrogate classes.

  The seed images are the training split (`data.train_split`, e.g. `train[:8000]` for the
  paper's 8000 seeds); an image's class is its dataset index, so `num_exemplars` must cover
  every index. Two augmented views per image per step are both classified. The classifier
  is the prototype layer: a normalised softmax over cosine similarities between the
  L2-normalised projection and N L2-normalised class vectors, divided by `temperature`.
  That keeps the cost of a step linear in N with no memory bank, and lets N grow to the
  whole dataset (instance discrimination with a parametric classifier, as in Wu et al. 2018's
  analysis); the paper's plain softmax over 8000-16000 classes is the small-N case of it.
  """

  name = "exemplar"
  heads = ("projector", "prototypes")
  needs_index = True
  config_fields = {
      "num_exemplars": Field(50000, "surrogate classes N: at least 1 + the largest training-example index", ge=2,
                             integer=True),
      "temperature": Field(0.1, "softmax temperature of the cosine scores", gt=0),
  }

  @classmethod
  def validate_config(cls, config) -> None:
    super().validate_config(config)
    if config.model.num_prototypes != config.exemplar.num_exemplars:
      raise ConfigError(f"exemplar classifies config.exemplar.num_exemplars={config.exemplar.num_exemplars} classes: "
                        f"set config.model.num_prototypes to it (got {config.model.num_prototypes}).")

  def __init__(self, config, **kwargs):
    super().__init__(config, **kwargs)
    if self.num_examples > self.settings.num_exemplars:
      raise ConfigError(f"exemplar makes each training image a class, and the training split has indices up to "
                        f"{self.num_examples - 1}: set config.exemplar.num_exemplars (and config.model.num_prototypes) "
                        f"to at least {self.num_examples}, or train on fewer seed images (config.data.train_split, "
                        f"e.g. 'train[:{self.settings.num_exemplars}]').")

  def loss(self, model, params, batch_stats, method_state, views, *, step, axis_name, batch=None):
    del step
    outputs, new_stats = multi_view_forward(model, params, batch_stats, views, predict=False)
    results = [classification_loss(o["scores"] / self.settings.temperature, batch["index"], axis_name)
               for o in outputs]
    loss = sum(r[0] for r in results) / len(results)
    top1 = sum(r[1] for r in results) / len(results)
    return projection_output(loss, outputs, new_stats, method_state, {"exemplar_top1": top1})
