"""Config parsing and validation: preset arguments, method fields, the synthetic data source."""
import os

import numpy as np
import pytest
from reference import REPO, load_config

from sslax.config_utils import ConfigError, Field, check_section, parse_arg
from sslax.data import load_dataset, synthetic_dataset
from sslax.methods import METHODS


def test_parse_arg_rejects_unknown_options_and_presets():
  assert parse_arg(None, ("cpu", "tiny"), "cpu") == ("cpu", {})
  assert parse_arg("tiny", ("cpu", "tiny"), "cpu") == ("tiny", {})
  assert parse_arg("tiny,runlocal=1", ("cpu", "tiny"), "cpu", options=("runlocal",)) == ("tiny", {"runlocal": "1"})
  with pytest.raises(ConfigError, match="Unknown config option 'bogus'.*takes no options"):
    parse_arg("cpu,bogus=1", ("cpu", "tiny"), "cpu")
  with pytest.raises(ConfigError, match="Two presets"):
    parse_arg("cpu,tiny", ("cpu", "tiny"), "cpu")
  with pytest.raises(ConfigError, match="valid presets: cpu, tiny"):
    parse_arg("gpu", ("cpu", "tiny"), "cpu")
  _, module = load_config("simclr")
  with pytest.raises(ConfigError, match="bogus"):
    module.get_config("cpu,bogus=1")


def test_field_ranges():
  import ml_collections

  fields = {"t": Field(0.5, "temperature", gt=0), "k": Field((3, 4), "clusters", gt=0, integer=True),
            "m": Field(0.9, ge=0, le=1), "s": Field(True, choices=(True, False))}
  config = ml_collections.ConfigDict({"x": {"t": 0.1, "k": (2, 5), "m": 1.0, "s": False}})
  check_section(config, "x", fields)
  for key, bad, match in (("t", 0.0, r"config\.x\.t=0\.0 \(temperature\): each value must be a number > 0"),
                          ("k", (2, 0), r"config\.x\.k=\(2, 0\).*an integer > 0"),
                          ("k", (2.5,), "an integer"), ("m", 1.5, "<= 1"), ("s", None, "one of True, False")):
    broken = ml_collections.ConfigDict(config.to_dict(), type_safe=False)
    broken.x[key] = bad
    with pytest.raises(ConfigError, match=match):
      check_section(broken, "x", fields)
  with pytest.raises(ConfigError, match="no section config.y"):
    check_section(config, "y", fields)


def test_every_method_has_its_own_section_with_valid_defaults():
  for name, cls in METHODS.items():
    config, module = load_config(name)
    if cls.config_fields:
      assert set(config[name].keys()) >= set(cls.config_fields), name
    for preset in module.PRESETS:
      cls.validate_config(module.get_config(preset))


def test_synthetic_source_is_deterministic_and_split_by_process():
  config, _ = load_config("simclr", **{"data.source": "synthetic", "data.synthetic.num_train_examples": 50,
                                       "data.synthetic.image_size": 16})
  full = load_dataset(config.data, "train")
  assert full.images.shape == (50, 16, 16, 3) and full.images.dtype == np.uint8
  assert full.labels.min() >= 0 and full.labels.max() < 10
  again = synthetic_dataset(50, image_size=16)
  np.testing.assert_array_equal(again.images, full.images)
  parts = [load_dataset(config.data, "train", process_index=i, process_count=3) for i in range(3)]
  np.testing.assert_array_equal(np.concatenate([p.images for p in parts]), full.images)
  np.testing.assert_array_equal(np.concatenate([p.indices for p in parts]), np.arange(50))
  test = load_dataset(config.data, "test")
  assert len(test) == config.data.synthetic.num_eval_examples
  assert not np.array_equal(test.images[:10], full.images[:10])  # Another stream of examples.


def test_global_batches_do_not_depend_on_the_process_count():
  from sslax.data import EpochSampler, train_batches

  n, batch, seed = 103, 12, 7
  one = EpochSampler(n, batch, seed)
  for step in (0, 5, 8, 9, 17):  # 8 steps an epoch: 9 and 17 are in later epochs.
    expected = np.sort(np.random.default_rng([seed, 0, step // 8]).permutation(n)[(step % 8) * batch:][:batch])
    np.testing.assert_array_equal(one.indices(step), expected)
    for count in (2, 3, 4):
      parts = [EpochSampler(n, batch, seed, p, count).indices(step) for p in range(count)]
      assert all(len(part) == batch // count for part in parts)
      np.testing.assert_array_equal(np.concatenate(parts), expected)  # Disjoint rows, same global batch.
  assert not np.array_equal(one.indices(0), one.indices(8))  # A fresh permutation each epoch.
  with pytest.raises(ValueError, match="not divisible by the 5 processes"):
    EpochSampler(n, batch, seed, 0, 5)
  # The host batches of two "processes", put together, are those of one process, resumed or not.
  config, _ = load_config("simclr", **{"data.source": "synthetic", "data.synthetic.num_train_examples": 40})
  data = load_dataset(config.data, "train")

  def host_batches(start, process_index=0, process_count=1, steps=3):
    it = train_batches(data, batch_size=8, seed=0, start_step=start, process_index=process_index,
                       process_count=process_count)
    return [next(it)[1] for _ in range(steps)]

  whole = host_batches(4)
  halves = [host_batches(4, p, 2) for p in range(2)]
  for s in range(3):
    for key in ("image", "label", "index"):
      np.testing.assert_array_equal(np.concatenate([halves[0][s][key], halves[1][s][key]]), whole[s][key])
  np.testing.assert_array_equal(host_batches(0, steps=6)[4]["index"], whole[0]["index"])


def test_load_config_file_applies_overrides_like_the_command_line():
  from sslax.config_utils import load_config_file

  config = load_config_file(os.path.join(REPO, "configs/moco_v2.py:tiny"), {"optimizer.name": "sgd", "batch_size": 8})
  assert config.method == "moco_v2" and config.optimizer.name == "sgd" and config.batch_size == 8
  with pytest.raises(ConfigError, match=r"'optimiser.name': the config has .*optimizer"):
    load_config_file(os.path.join(REPO, "configs/moco_v2.py:tiny"), {"optimiser.name": "sgd"})
  with pytest.raises(ConfigError, match=r"'optimizer.nam': config.optimizer has .*name"):
    load_config_file(os.path.join(REPO, "configs/moco_v2.py:tiny"), {"optimizer.nam": "sgd"})
  with pytest.raises(FileNotFoundError, match="configs/nope.py"):
    load_config_file("configs/nope.py:tiny")
