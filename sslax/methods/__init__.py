"""SSL methods, chosen by `config.method`. Each has the same small surface (methods.common.Method):

- `num_views`: global views per image; `supports_multicrop`: whether it also takes
  `config.augment.num_local_crops` smaller views (SwAV, DINO);
- `init_state(params, rng)`: method state kept in TrainState.method_state (EMA target
  params, a key queue, DINO's center, ...);
- `loss(model, params, batch_stats, method_state, views, *, step, axis_name, batch)`:
  (loss, aux) with collectives over `axis_name`; aux = {'batch_stats', 'metrics',
  'features' (backbone output of view 1, for the online probe), 'embeddings' (what the
  collapse monitors watch), 'method_state' (after this batch: queue, center)};
- `post_update(state)`: pure update after the optimizer step (EMA targets);
- optional `needs_index` (the loss reads batch['index']) and `fill_memory` (a forward-only
  pass over one epoch before training, DeepCluster v2).
"""
from __future__ import annotations

from sslax.methods.barlow_twins import BarlowTwins
from sslax.methods.byol import BYOL
from sslax.methods.deepcluster_v2 import DeepClusterV2
from sslax.methods.dino import DINO
from sslax.methods.moco import MoCoV2, MoCoV3
from sslax.methods.simclr import SimCLR
from sslax.methods.simsiam import SimSiam
from sslax.methods.swav import SwAV
from sslax.methods.vicreg import VICReg

METHODS = {"simclr": SimCLR, "moco_v2": MoCoV2, "moco_v3": MoCoV3, "byol": BYOL, "simsiam": SimSiam, "swav": SwAV,
           "deepcluster_v2": DeepClusterV2, "barlow_twins": BarlowTwins, "vicreg": VICReg, "dino": DINO}


def get_method(config, *, total_steps: int = 1, steps_per_epoch: int = 1, num_examples: int = 0):
  """Instantiates the method named by `config.method`.

  Args:
    config: the run config.
    total_steps: length of training (momentum schedules).
    steps_per_epoch: for settings given in epochs (frozen prototypes, warm-ups, queue start).
    num_examples: upper bound of the training examples' dataset indices (DeepCluster v2's memory).
  """
  if config.method not in METHODS:
    raise ValueError(f"Unknown method {config.method!r}; valid choices: {', '.join(sorted(METHODS))}.")
  method = METHODS[config.method](config, total_steps=total_steps, steps_per_epoch=steps_per_epoch,
                                  num_examples=num_examples)
  if config.augment.get("num_local_crops", 0) and not method.supports_multicrop:
    raise ValueError(f"{config.method} takes two views; set --config.augment.num_local_crops=0 "
                     f"(multi-crop is for {', '.join(k for k, m in METHODS.items() if m.supports_multicrop)}).")
  return method
