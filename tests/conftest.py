"""Test set-up: eight virtual CPU devices, so multi-device semantics are tested on CPU.

XLA reads its flags when jax first initialises its backend, so they are set here, before any
test module imports jax. Child processes (the CLI tests) get theirs from
`reference.subprocess_env`.
"""
import os
import tempfile

# CIFAR-10 prepared for TFDS lives in ../shared beside the checkout (CI sets TFDS_DATA_DIR too).
_SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "tensorflow_datasets")
if "TFDS_DATA_DIR" not in os.environ and os.path.isdir(_SHARED):
  os.environ["TFDS_DATA_DIR"] = os.path.abspath(_SHARED)

from reference import TEST_XLA_FLAGS  # noqa: E402 (after TFDS_DATA_DIR: it reads it)

os.environ["XLA_FLAGS"] = " ".join(
    [TEST_XLA_FLAGS, os.environ.get("XLA_FLAGS", ""), "--xla_force_host_platform_device_count=8"])
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Most of the suite's time is XLA compiling the same programs again (every test of the tiny
# SimCLR preset compiles the same initialiser and step; CLI tests do it in a subprocess). JAX's
# persistent compilation cache, shared by the xdist workers and the subprocesses they start
# (they inherit the environment), compiles each program once per machine. A cache hit loads the
# executable that a miss would build, so no result depends on it. The size limit turns on
# JAX's file lock, which the two workers need to write the cache safely.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), "sslax-tests-jax-cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
try:
  import filelock  # noqa: F401 (a test extra; JAX silently turns the cache off if it is missing)

  os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(4 << 30))
except ImportError:
  pass

import pytest  # noqa: E402


def _tiny_simclr():
  import importlib.util

  spec = importlib.util.spec_from_file_location(
      "simclr_config", os.path.join(os.path.dirname(__file__), "..", "configs", "simclr.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config("tiny")


@pytest.fixture
def tiny_config():
  """The tiny SimCLR preset on 256 synthetic training images (no files needed), unlocked for edits."""
  config = _tiny_simclr()
  with config.unlocked():
    config.data.source = "synthetic"
    config.data.synthetic.num_train_examples = 256
    config.data.synthetic.num_eval_examples = 256
  return config


@pytest.fixture
def cifar_tiny_config():
  """The tiny SimCLR preset on the first 256 CIFAR-10 training images, for tests of the real data path."""
  from reference import HAVE_CIFAR

  if not HAVE_CIFAR:
    pytest.skip("CIFAR-10 prepared for TFDS not found (set TFDS_DATA_DIR; CI has ../shared/tensorflow_datasets)")
  config = _tiny_simclr()
  with config.unlocked():
    config.data.train_split = "train[:256]"
  return config
