"""Config helpers: preset parsing, duration resolution and validation with clear errors."""
from __future__ import annotations

from typing import Iterable, Mapping

import ml_collections


def parse_arg(arg: str | None, presets: Iterable[str], default: str) -> tuple[str, dict[str, str]]:
  """Parses a config-file argument `preset[,key=value,...]` (big_vision style).

  Args:
    arg: the text after ':' in `--config=configs/x.py:arg`, or None.
    presets: valid preset names.
    default: preset used when arg names none.

  Returns:
    (preset, extra key=value options).

  Raises:
    ValueError: unknown preset, listing the valid ones.
  """
  presets = tuple(presets)
  preset, options = default, {}
  for part in filter(None, (arg or "").split(",")):
    if "=" in part:
      key, value = part.split("=", 1)
      options[key.strip()] = value.strip()
    else:
      preset = part.strip()
  if preset not in presets:
    raise ValueError(f"Unknown preset {preset!r}; valid presets: {', '.join(presets)}.")
  return preset, options


def check_choice(value, choices: Iterable, key: str) -> None:
  """Raises ValueError naming `key` and listing `choices` if value is not one of them."""
  choices = tuple(choices)
  if value not in choices:
    raise ValueError(f"Invalid value {value!r} for config.{key}; valid choices: {', '.join(map(str, choices))}.")


def resolve_steps(config: ml_collections.ConfigDict, name: str, steps_per_epoch: int) -> int:
  """Steps of a duration given as `<name>_steps` or `<name>_epochs`.

  `<name>_steps`, when set, overrides `<name>_epochs`, so a preset given in epochs can be
  shortened from the command line with `--config.<name>_steps=N`.

  Args:
    config: config with fields `<name>_steps` and/or `<name>_epochs` (None when unset).
    name: e.g. 'total' or 'warmup'.
    steps_per_epoch: training steps per epoch.

  Returns:
    Number of steps.
  """
  steps, epochs = config.get(f"{name}_steps"), config.get(f"{name}_epochs")
  if steps is not None:
    return int(steps)
  if epochs is None:
    raise ValueError(f"Set config.{name}_steps or config.{name}_epochs (both are None).")
  return int(round(float(epochs) * steps_per_epoch))


def validate(config: ml_collections.ConfigDict, choices: Mapping[str, Iterable]) -> None:
  """Checks every `key: choices` pair (dotted keys) against the config."""
  for key, valid in choices.items():
    value = config
    for part in key.split("."):
      value = value[part]
    check_choice(value, valid, key)
