"""Config helpers: preset parsing, duration resolution and validation with clear errors."""
from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Mapping

import ml_collections


class ConfigError(ValueError):
  """A config field has a value the run cannot use; the message names the field and what to set."""


def parse_arg(arg: str | None, presets: Iterable[str], default: str,
              options: Iterable[str] = ()) -> tuple[str, dict[str, str]]:
  """Parses a config-file argument `preset[,key=value,...]` (big_vision style).

  Args:
    arg: the text after ':' in `--config=configs/x.py:arg`, or None.
    presets: valid preset names.
    default: preset used when arg names none.
    options: the `key=value` keys this config file accepts (none by default).

  Returns:
    (preset, the given key=value options).

  Raises:
    ConfigError: an unknown preset, a second preset or an option the file does not accept,
      listing what is valid (nothing is silently dropped).
  """
  presets, accepted = tuple(presets), tuple(options)
  preset, given = None, {}
  for part in filter(None, (p.strip() for p in (arg or "").split(","))):
    if "=" in part:
      key, value = (x.strip() for x in part.split("=", 1))
      if key not in accepted:
        valid = f"valid options: {', '.join(accepted)}" if accepted else "this config file takes no options"
        raise ConfigError(f"Unknown config option {key!r} in {arg!r}; {valid}. Override fields with "
                          f"--config.FIELD=VALUE instead.")
      given[key] = value
    elif preset is not None:
      raise ConfigError(f"Two presets ({preset!r}, {part!r}) in {arg!r}; give one of: {', '.join(presets)}.")
    else:
      preset = part
  preset = default if preset is None else preset
  if preset not in presets:
    raise ConfigError(f"Unknown preset {preset!r}; valid presets: {', '.join(presets)}.")
  return preset, given


@dataclasses.dataclass(frozen=True)
class Field:
  """One field of a method's config section: its default and its valid range.

  Attributes:
    default: the published default (a tuple for per-head values; each element is checked).
    help: what the field means, shown in errors.
    gt, ge, lt, le: bounds (exclusive / inclusive); None for no bound.
    integer: the value must be an integer.
    choices: the value must be one of these.
    text: the value must be a non-empty string.
  """

  default: Any
  help: str = ""
  gt: float | None = None
  ge: float | None = None
  lt: float | None = None
  le: float | None = None
  integer: bool = False
  choices: tuple | None = None
  text: bool = False  # The value is a string (or each element of a tuple of strings).

  def describe(self) -> str:
    """The valid range in words, e.g. 'a number > 0 and <= 1'."""
    if self.text:
      return "a non-empty string"
    if self.choices is not None:
      return "one of " + ", ".join(map(repr, self.choices))
    parts = [f"{op} {bound}" for op, bound in ((">", self.gt), (">=", self.ge), ("<", self.lt), ("<=", self.le))
             if bound is not None]
    return ("an integer" if self.integer else "a number") + (" " + " and ".join(parts) if parts else "")

  def accepts(self, value: Any) -> bool:
    if self.text:
      return isinstance(value, str) and bool(value)
    if self.choices is not None:
      return value in self.choices
    if isinstance(value, bool) or not isinstance(value, (int, float)):
      return False
    if self.integer and int(value) != value:
      return False
    return ((self.gt is None or value > self.gt) and (self.ge is None or value >= self.ge)
            and (self.lt is None or value < self.lt) and (self.le is None or value <= self.le))


def section_defaults(fields: Mapping[str, Field]) -> ml_collections.ConfigDict:
  """A config section holding each field's default."""
  return ml_collections.ConfigDict({name: field.default for name, field in fields.items()})


def check_section(config: ml_collections.ConfigDict, section: str, fields: Mapping[str, Field]) -> None:
  """Checks every field of `config.<section>` against its declared range.

  Raises:
    ConfigError: naming the first bad field, its value, the valid range and the default.
  """
  if section not in config:
    raise ConfigError(f"The config has no section config.{section}; build it with "
                      f"sslax.presets.base_config({section!r}, preset), which adds the method's defaults.")
  values = config[section]
  for name, field in fields.items():
    value = values.get(name)
    elements = tuple(value) if isinstance(value, (tuple, list)) else (value,)
    if isinstance(field.default, (tuple, list)) and not elements:
      raise ConfigError(f"config.{section}.{name} is empty; give at least one value, e.g. {field.default}.")
    for element in elements:
      if not field.accepts(element):
        what = f" ({field.help})" if field.help else ""
        raise ConfigError(f"Invalid config.{section}.{name}={value!r}{what}: each value must be "
                          f"{field.describe()}. Default: --config.{section}.{name}={field.default!r}.")


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


def load_config_file(spec: str, overrides: Mapping[str, Any] | None = None) -> ml_collections.ConfigDict:
  """A config as `--config=SPEC --config.KEY=VALUE ...` gives it, for notebooks and scripts.

  Args:
    spec: `path/to/config.py[:arg]`, e.g. 'configs/simclr.py:cpu'.
    overrides: dotted keys to values, e.g. {'optimizer.name': 'sgd', 'batch_size': 64}.

  Returns:
    The locked config.

  Raises:
    FileNotFoundError: no such config file.
    ConfigError: a key that the config does not have (named, with its section's keys).
  """
  import importlib.util
  import os

  path, _, arg = spec.partition(":")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"Config file {path!r} not found (from {spec!r}); paths are relative to "
                            f"{os.getcwd()!r}, e.g. 'configs/simclr.py:cpu' from the repository root.")
  module_spec = importlib.util.spec_from_file_location(f"sslax_config_{abs(hash(path))}", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return apply_overrides(module.get_config(arg or None), overrides or {})


def apply_overrides(config: ml_collections.ConfigDict, overrides: Mapping[str, Any]) -> ml_collections.ConfigDict:
  """Sets dotted-key fields of `config` in place, as `--config.KEY=VALUE` does.

  Args:
    config: the config to change.
    overrides: dotted keys to values, e.g. {'optimizer.name': 'sgd'}; every key must exist.

  Returns:
    `config`.

  Raises:
    ConfigError: a key that the config does not have (named, with its section's keys).
  """
  for key, value in overrides.items():
    parts = key.split(".")
    parent = config
    for depth, part in enumerate(parts):
      if not isinstance(parent, ml_collections.ConfigDict) or part not in parent:
        where = "config." + ".".join(parts[:depth]) if depth else "the config"
        keys = ", ".join(sorted(parent.keys())) if isinstance(parent, ml_collections.ConfigDict) else "no fields"
        raise ConfigError(f"Unknown config field {key!r}: {where} has {keys}.")
      if depth < len(parts) - 1:
        parent = parent[part]
    parent[parts[-1]] = value
  return config
