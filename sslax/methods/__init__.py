"""SSL methods, chosen by `config.method`; the contract they share is in sslax/methods/base.py.

Adding a method: write `sslax/methods/<name>.py` (a `Method` subclass), add one line naming its class to
`_REGISTERED` below, and write `configs/<name>.py` (see CONTRIBUTING.md).
"""
from __future__ import annotations

import importlib

from sslax.config_utils import ConfigError
from sslax.methods.base import LossOutput, Method

# The registry: one line per method, "module.Class"; the class's `name` is its config.method key.
_REGISTERED = (
    "sslax.methods.simclr.SimCLR",
    "sslax.methods.moco.MoCoV2",
    "sslax.methods.moco.MoCoV3",
    "sslax.methods.byol.BYOL",
    "sslax.methods.simsiam.SimSiam",
    "sslax.methods.swav.SwAV",
    "sslax.methods.deepcluster_v2.DeepClusterV2",
    "sslax.methods.barlow_twins.BarlowTwins",
    "sslax.methods.vicreg.VICReg",
    "sslax.methods.dino.DINO",
    "sslax.methods.rotnet.RotNet",
    "sslax.methods.jigsaw.Jigsaw",
    "sslax.methods.relative_patch.RelativePatch",
    "sslax.methods.exemplar.Exemplar",
    "sslax.methods.denoising_ae.DenoisingAutoencoder",
    "sslax.methods.colorization.Colorization",
    "sslax.methods.split_brain.SplitBrain",
    "sslax.methods.counting.Counting",
    "sslax.methods.context_encoder.ContextEncoder",
    "sslax.methods.clip.CLIP",
    "sslax.methods.scarf.SCARF",
    "sslax.methods.cpc.CPC",
    "sslax.methods.metric.MetricLearning",
    "sslax.methods.npid.NPID",
    "sslax.methods.pirl.PIRL",
    "sslax.methods.mae.MAE",
)


def _load(path: str) -> type[Method]:
  module, cls = path.rsplit(".", 1)
  return getattr(importlib.import_module(module), cls)


METHODS: dict[str, type[Method]] = {m.name: m for m in map(_load, _REGISTERED)}

def method_class(name: str) -> type[Method]:
  """The Method subclass registered as `name`.

  Raises:
    ConfigError: unknown name, listing the registered ones.
  """
  if name not in METHODS:
    raise ConfigError(f"Unknown method {name!r} (config.method); valid choices: {', '.join(sorted(METHODS))}.")
  return METHODS[name]


def get_method(config, *, total_steps: int = 1, steps_per_epoch: int = 1, num_examples: int = 0) -> Method:
  """Instantiates (and validates the config of) the method named by `config.method`.

  Args:
    config: the run config.
    total_steps: length of training (momentum schedules).
    steps_per_epoch: for settings given in epochs (frozen prototypes, warm-ups, queue start).
    num_examples: upper bound of the training examples' dataset indices (memory banks).
  """
  cls = method_class(config.method)
  if config.augment.get("num_local_crops", 0) and not cls.supports_multicrop:
    raise ConfigError(f"{config.method} takes two views; set --config.augment.num_local_crops=0 "
                      f"(multi-crop is for {', '.join(k for k, m in METHODS.items() if m.supports_multicrop)}).")
  return cls(config, total_steps=total_steps, steps_per_epoch=steps_per_epoch, num_examples=num_examples)


__all__ = ["METHODS", "LossOutput", "Method", "get_method", "method_class"]
