"""The one pytree that is trained, checkpointed and restored."""
from __future__ import annotations

from typing import Any

import flax
import jax


@flax.struct.dataclass
class TrainState:
  """Everything that changes during training, as arrays only (no callables), so orbax can
  save it and `jax.jit` can donate it.

  Attributes:
    step: int32 scalar, number of optimizer updates applied.
    params: model parameters {'backbone': ..., 'projector': ..., ...}.
    batch_stats: BatchNorm running statistics.
    opt_state: optax state.
    method_state: method-specific state, e.g. target-network params, a key queue or
      DINO's center; an empty dict for SimCLR.
    probe: the online linear probe {'params': {'w', 'b'}, 'opt_state'} ({} when disabled).
  """

  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  method_state: Any
  probe: Any
