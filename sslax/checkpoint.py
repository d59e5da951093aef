"""Checkpoints with orbax: periodic saves, keep-K, automatic resume from the workdir."""
from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp


class CheckpointError(RuntimeError):
  """A checkpoint exists but cannot be restored."""


class Checkpointer:
  """Saves and restores TrainState under `<workdir>/checkpoints/<step>`.

  orbax writes each checkpoint to a temporary directory and renames it when complete,
  so a run killed mid-save leaves the previous checkpoints intact, and nothing here
  ever deletes a checkpoint except the keep-K policy after a successful save.

  Args:
    workdir: the run's directory.
    max_to_keep: how many recent checkpoints to keep.
    async_save: write in a background thread (training continues meanwhile).
  """

  def __init__(self, workdir: str, *, max_to_keep: int = 3, async_save: bool = True):
    self.directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                           enable_async_checkpointing=async_save)
    # The handler is named up front so metadata can be read before any save or restore.
    self.manager = ocp.CheckpointManager(self.directory, options=options,
                                         item_handlers=ocp.StandardCheckpointHandler())

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def save(self, state: Any, step: int) -> None:
    """Saves `state` as checkpoint `step` (no-op if that step is already saved)."""
    if step in self.manager.all_steps():
      return
    self.manager.save(step, args=ocp.args.StandardSave(state), force=True)

  def restore(self, abstract_state: Any, step: int | None = None) -> Any:
    """Restores the checkpoint `step` (default: latest) onto the shardings of `abstract_state`.

    Args:
      abstract_state: pytree of jax.ShapeDtypeStruct with shardings (from jax.eval_shape).
      step: which checkpoint; None for the latest.

    Returns:
      The restored TrainState.

    Raises:
      CheckpointError: the checkpoint is unreadable or does not match the model; the
        message says how to proceed. Nothing on disk is changed.
    """
    step = self.latest_step() if step is None else step
    try:
      return self.manager.restore(step, args=ocp.args.StandardRestore(abstract_state))
    except Exception as e:  # orbax raises many types (ValueError, FileNotFoundError, tensorstore errors).
      earlier = [s for s in self.all_steps() if s != step]
      hint = (f"Earlier checkpoints in that directory: {earlier}; to resume from one, move "
              f"{os.path.join(self.directory, str(step))} out of {self.directory}."
              if earlier else "There is no earlier checkpoint to fall back to.")
      raise CheckpointError(
          f"Could not restore checkpoint step {step} from {self.directory}: {type(e).__name__}: {e}. "
          f"It is unreadable or was written for a different model/config. Nothing was deleted. {hint} "
          f"To start a fresh run instead, use a new --workdir.") from e

  def wait(self) -> None:
    """Blocks until pending asynchronous saves are on disk."""
    self.manager.wait_until_finished()

  def close(self) -> None:
    """Waits for pending saves, then stops orbax's background threads (idempotent)."""
    if self.manager is None:
      return
    self.manager.wait_until_finished()
    self.manager.close()
    self.manager = None

  def __enter__(self) -> "Checkpointer":
    return self

  def __exit__(self, *exc_info) -> None:
    # Also on an error (a checkpoint that cannot be restored, a failing step): saves already
    # started reach the disk, and orbax's background threads stop with the run.
    self.close()


def abstract_with_shardings(tree: Any) -> Any:
  """ShapeDtypeStructs (with shardings) of a pytree of arrays, as restore targets."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)
