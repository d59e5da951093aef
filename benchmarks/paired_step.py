r"""Paired A/B timing of two variants of the train step, in one process, called alternately.

On a shared machine whose speed drifts by 10-30% within minutes, timing variant A in one
process and variant B in the next cannot resolve a change of a few per cent. This compiles
both variants in one process and times them in alternating pairs (ABBA order), so that both
see the same machine at the same moment; it reports each variant's median step time and the
median of the per-pair ratio A/B (above 1: B is faster).

A is the config as given; B is A with `--b=KEY=VALUE` overrides (config fields, repeatable)
and/or `--b_compiler_options=NAME=VALUE` (XLA options for B's compilation only). For example:

  python benchmarks/paired_step.py --config=configs/simclr.py:cpu --config.batch_size=256 \
      --config.augment.crop_size=32 --b=model.conv_impl=xla --pairs=20
  python benchmarks/paired_step.py --config=configs/simclr.py:cpu --config.batch_size=256 \
      --config.augment.crop_size=32 --b_compiler_options=xla_cpu_prefer_vector_width=512

Host settings (one XLA device per core, malloc on huge pages; sslax/host.py) come from A and
cannot differ between the variants.
"""
from __future__ import annotations

import ast
import copy
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax  # noqa: E402
from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from sslax import host  # noqa: E402
from sslax.config_utils import ConfigError, apply_overrides  # noqa: E402
from sslax.data import load_dataset  # noqa: E402
from pairing import alternate, report, summary, timed_step  # noqa: E402 (benchmarks/pairing.py)

_CONFIG = config_flags.DEFINE_config_file("config", "configs/simclr.py:cpu", "Config of variant A.")
_B = flags.DEFINE_multi_string("b", [], "KEY=VALUE config override that makes variant B (repeatable).")
_B_OPTIONS = flags.DEFINE_multi_string("b_compiler_options", [], "NAME=VALUE XLA compiler option for B only.")
_PAIRS = flags.DEFINE_integer("pairs", 20, "Timed pairs of steps (after two warm-up steps of each).")
_OUT = flags.DEFINE_string("out", None, "Optional JSON file for the results.")

_HOST_FIELDS = ("cpu_devices", "cpu_malloc", "cpu_hugepages")


def _value(text: str):
  """A Python literal ('0.5', '(2048,)', 'True') or, failing that, the string itself."""
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def _pairs(items, what):
  out = {}
  for item in items:
    key, sep, text = item.partition("=")
    if not sep:
      raise app.UsageError(f"{what} {item!r} is not NAME=VALUE.")
    out[key] = _value(text)
  return out


def variant_b(config_a, overrides):
  """Config A with dotted-key overrides (each key must exist in A).

  Args:
    config_a: the ConfigDict of variant A (left unchanged).
    overrides: dotted keys to values.

  Returns:
    The ConfigDict of variant B.

  Raises:
    ConfigError: an unknown key, or a host setting (which both variants share).
  """
  shared = sorted(set(overrides) & set(_HOST_FIELDS))
  if shared:
    raise ConfigError(f"--b={shared[0]}=... would change a host setting that both variants share; "
                      f"set --config.{shared[0]} instead.")
  return apply_overrides(copy.deepcopy(config_a), overrides)


def main(argv):
  del argv
  config_a = _CONFIG.value
  host.reexec_with_fast_malloc(config_a)
  host.set_cpu_devices(config_a)
  config_b = variant_b(config_a, _pairs(_B.value, "--b"))
  options_b = _pairs(_B_OPTIONS.value, "--b_compiler_options") or None
  if config_b == config_a and not options_b:
    raise app.UsageError("B is the same as A: give --b=KEY=VALUE and/or --b_compiler_options=NAME=VALUE.")

  data = load_dataset(config_a.data, config_a.data.train_split)
  runs = {"A": timed_step(config_a, data), "B": timed_step(config_b, data, options_b)}
  times = alternate(runs, _PAIRS.value)
  result = {
      "b_overrides": _B.value, "b_compiler_options": _B_OPTIONS.value, "pairs": _PAIRS.value,
      "batch_size": config_a.batch_size, "devices": jax.device_count(),
      **summary(times["A"], times["B"], "a", "b"),
  }
  report(result, _OUT.value)


if __name__ == "__main__":
  app.run(main)
