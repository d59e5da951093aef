"""SSL methods, chosen by `config.method`. Each has the same small surface:

- `num_views`: how many augmented views of each image the loss takes;
- `init_state(params, rng)`: method state kept in TrainState.method_state;
- `loss(model, params, batch_stats, method_state, views, axis_name)`:
  (loss, (new_batch_stats, metrics, features)), with collectives over `axis_name`;
  `features` are the backbone outputs of the first view, for the online probe;
- `post_update(state)`: pure update after the optimizer step (EMA targets, queues).
"""
from __future__ import annotations

from sslax.methods.barlow_twins import BarlowTwins
from sslax.methods.simclr import SimCLR
from sslax.methods.vicreg import VICReg

METHODS = {"simclr": SimCLR, "barlow_twins": BarlowTwins, "vicreg": VICReg}


def get_method(config):
  """Instantiates the method named by `config.method`."""
  if config.method not in METHODS:
    raise ValueError(f"Unknown method {config.method!r}; valid choices: {', '.join(sorted(METHODS))}.")
  return METHODS[config.method](config)
