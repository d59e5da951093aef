"""Test set-up: eight virtual CPU devices, so multi-device semantics are tested on CPU.

XLA reads the flag when jax first initialises its backend, so it must be set before any
test module imports jax.
"""
import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# CIFAR-10 prepared for TFDS lives in ../shared beside the checkout (CI sets TFDS_DATA_DIR too).
_SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "tensorflow_datasets")
if "TFDS_DATA_DIR" not in os.environ and os.path.isdir(_SHARED):
  os.environ["TFDS_DATA_DIR"] = os.path.abspath(_SHARED)

import pytest  # noqa: E402


@pytest.fixture
def tiny_config():
  """The tiny SimCLR preset on the first 256 CIFAR-10 training images, unlocked for edits."""
  import importlib.util

  spec = importlib.util.spec_from_file_location(
      "simclr_config", os.path.join(os.path.dirname(__file__), "..", "configs", "simclr.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config("tiny")
  with config.unlocked():
    config.data.train_split = "train[:256]"
  return config
