"""Device mesh, shardings, host-to-device batch transfer and the cross-device collectives.

sslax is data parallel: one mesh axis, DATA_AXIS, over every device of every
process. Parameters and optimizer state are replicated; each batch is a global
`jax.Array` whose leading dimension is split over the data axis.

The collectives (`global_sum`, `all_gather`, `gather_for_state`, ...) run inside
`jax.shard_map` over that axis; with `axis_name=None` they are the identity, so every loss
and method also runs on one device without a mesh.
"""
from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A 1-D mesh over `devices` (default: all devices of all processes).

  Args:
    devices: devices to use; tests pass a subset to compare 1 vs N devices.

  Returns:
    Mesh with the single axis DATA_AXIS.
  """
  devices = list(jax.devices() if devices is None else devices)
  # Auto axes: jit inserts any resharding itself (e.g. a host array passed to the step).
  return jax.make_mesh((len(devices),), (DATA_AXIS,), axis_types=(jax.sharding.AxisType.Auto,), devices=devices)


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def check_batch_size(global_batch_size: int, mesh: Mesh, process_count: int | None = None) -> None:
  """Raises a ValueError saying what to do when the batch cannot be split evenly.

  Args:
    global_batch_size: examples per step over all devices.
    mesh: the training mesh.
    process_count: number of host processes (default jax.process_count()).
  """
  num_devices = mesh.devices.size
  process_count = jax.process_count() if process_count is None else process_count
  if global_batch_size <= 0 or global_batch_size % num_devices:
    lower = max(num_devices, global_batch_size // num_devices * num_devices)
    raise ValueError(
        f"config.batch_size={global_batch_size} is not divisible by the {num_devices} devices of the mesh. "
        f"Every device needs the same number of examples: use a multiple of {num_devices} "
        f"(e.g. --config.batch_size={lower} or {lower + num_devices}).")
  if global_batch_size % process_count:
    raise ValueError(f"config.batch_size={global_batch_size} is not divisible by the {process_count} processes.")


def to_global_batch(local_batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Assembles per-process host arrays into global arrays sharded along DATA_AXIS.

  Each process passes its own rows (global_batch / process_count of them); the global
  batch is their concatenation in process order.

  Args:
    local_batch: dict of numpy arrays whose leading dimension is this process's rows.
    mesh: the training mesh.

  Returns:
    dict of global jax.Arrays with leading dimension global_batch.
  """
  sharding = batch_sharding(mesh)
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), local_batch)


def replicate(tree: Any, mesh: Mesh) -> Any:
  """Places a host pytree on every device of the mesh."""
  return jax.device_put(tree, replicated(mesh))


# ----------------------------------------------------------------------------- collectives


def axis_size(axis_name: str | None) -> int:
  """Number of devices along `axis_name` (static; 1 without an axis)."""
  return 1 if axis_name is None else jax.lax.axis_size(axis_name)


def device_offset(n_local: int, axis_name: str | None) -> jax.Array:
  """Global row index of this device's first row (devices hold consecutive blocks of n_local)."""
  return jnp.int32(0) if axis_name is None else jax.lax.axis_index(axis_name) * n_local


def global_sum(x: jax.Array, axis_name: str | None) -> jax.Array:
  """Sum over devices (identity on one device)."""
  return x if axis_name is None else jax.lax.psum(x, axis_name)


def global_count(n_local: int, axis_name: str | None) -> jax.Array:
  """Rows of the global batch as float32, from this device's n_local."""
  return global_sum(jnp.asarray(n_local, jnp.float32), axis_name)


def global_mean(x: jax.Array, axis_name: str | None) -> jax.Array:
  """Mean of the per-row values `x` (n_local,) over the global batch."""
  return global_sum(jnp.sum(x), axis_name) / global_count(x.shape[0], axis_name)


def all_gather(x: jax.Array, axis_name: str | None) -> jax.Array:
  """Differentiable tiled all-gather: (n_local, ...) -> (n_devices * n_local, ...) in device order.

  Its transpose (psum_scatter) sends each device the gradient of every row it contributed,
  which is what makes contrastive losses over gathered negatives exact.
  """
  return x if axis_name is None else jax.lax.all_gather(x, axis_name, tiled=True)


def gather_for_state(x: jax.Array, axis_name: str | None) -> jax.Array:
  """All-gather (tiled, device order) whose result is typed as replicated, for state updates.

  `lax.all_gather` output counts as device-varying inside shard_map, so it cannot become
  replicated state (a queue); the sum over devices of x written at this device's offset
  is the same array and is replicated by construction. Not for use under a gradient.
  """
  if axis_name is None:
    return x
  n_local = x.shape[0]
  n_global = jax.lax.psum(n_local, axis_name)
  padded = jnp.zeros((n_global, *x.shape[1:]), x.dtype)
  padded = jax.lax.dynamic_update_slice_in_dim(padded, x, device_offset(n_local, axis_name), axis=0)
  return jax.lax.psum(padded, axis_name)
