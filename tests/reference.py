"""Helpers for reference checks in the tests (imported as `reference`: pytest puts tests/ on sys.path)."""
import os

import numpy as np
import pytest

# XLA's CPU backend at optimisation level 0 compiles the tiny test models 2-6x faster (the
# threefry-heavy initialiser: 32 s at the default level, 5 s at 0) and runs the suite's few-step
# programs faster in total; the flag changes how fast XLA's code is, not what it computes.
# Benchmarks and real runs keep the default level.
TEST_XLA_FLAGS = "--xla_backend_optimization_level=0"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # The checkout: cwd of CLI subprocesses.


def subprocess_env(num_devices, **extra):
  """os.environ for a child process (the CLI) that sees `num_devices` CPU devices and compiles
  like the test process (same XLA flags, same persistent compilation cache)."""
  return dict(os.environ, XLA_FLAGS=f"{TEST_XLA_FLAGS} --xla_force_host_platform_device_count={num_devices}",
              PYTHONUNBUFFERED="1", **extra)


def restore_train_state(config, workdir):
  """The TrainState of `config` (probe on: labelled data) restored on one device from the latest
  checkpoint in `workdir`, as host arrays."""
  import jax

  from sslax import parallel
  from sslax.checkpoint import Checkpointer, abstract_with_shardings
  from sslax.step import build_setup, create_train_state

  setup = build_setup(config, 256, mesh=parallel.make_mesh(jax.devices()[:1]), num_classes=10)
  template = create_train_state(setup, jax.random.PRNGKey(0))
  with Checkpointer(workdir) as ckpt:
    state = ckpt.restore(abstract_with_shardings(template))
  return jax.device_get(state)


# Tests of the real CIFAR-10 reading path; the rest of the suite runs on synthetic data.
HAVE_CIFAR = os.path.isdir(os.path.join(os.environ.get("TFDS_DATA_DIR", ""), "cifar10"))
requires_cifar = pytest.mark.skipif(not HAVE_CIFAR, reason="CIFAR-10 prepared for TFDS not found in $TFDS_DATA_DIR "
                                    "(CI has ../shared/tensorflow_datasets)")


def numerical_grad(f, x, eps=1e-6):
  """Central-difference gradient of a scalar float64 function `f` at `x`."""
  g = np.zeros_like(x)
  for idx in np.ndindex(x.shape):
    xp, xm = x.copy(), x.copy()
    xp[idx] += eps
    xm[idx] -= eps
    g[idx] = (f(xp) - f(xm)) / (2 * eps)
  return g


def load_config(name, preset="tiny", **overrides):
  """configs/<name>.py's preset, unlocked, with dotted-key overrides (e.g. **{"model.backbone": "vit_test"})."""
  import importlib.util

  path = os.path.join(os.path.dirname(__file__), "..", "configs", f"{name}.py")
  spec = importlib.util.spec_from_file_location(f"{name}_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config(preset)
  with config.unlocked():
    for key, value in overrides.items():
      *path, leaf = key.split(".")
      node = config
      for part in path:
        node = node[part]
      node[leaf] = value
  return config, module


def random_batch(n=16, seed=0, size=32, index_bound=None):
  """A host batch of random uint8 images and labels (and dataset indices < index_bound)."""
  rng = np.random.default_rng(seed)
  batch = {"image": rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8),
           "label": rng.integers(0, 10, size=(n,)).astype(np.int32)}
  if index_bound is not None:
    batch["index"] = rng.permutation(index_bound)[:n].astype(np.int32)
  return batch


TABLE_SHAPES = {"numeric": (6,), "categorical": (8,)}


def random_table_batch(n=16, seed=0, index_bound=None):
  """A host batch of a random table (6 numeric, 8 categorical columns of codes < 10), with
  labels, marginal draws and dataset indices < index_bound."""
  rng = np.random.default_rng(seed)
  batch = {"numeric": rng.normal(size=(n, 6)).astype(np.float32),
           "categorical": rng.integers(0, 10, size=(n, 8)).astype(np.int32),
           "donor_numeric": rng.normal(size=(n, 6)).astype(np.float32),
           "donor_categorical": rng.integers(0, 10, size=(n, 8)).astype(np.int32),
           "label": rng.integers(0, 10, size=(n,)).astype(np.int32)}
  batch["index"] = rng.permutation(index_bound or n)[:n].astype(np.int32)
  return batch


def assert_trees_close(a, b, rtol=1e-4, atol_scale=1e-5):
  """Same structure; integer leaves equal, float leaves close relative to each leaf's scale
  (float32 sums over devices run in another order): |x - y| <= atol_scale * max(1, max|y|) + rtol * |y|."""
  import jax

  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  assert jax.tree.structure(a) == jax.tree.structure(b)
  assert len(la) == len(lb) and la
  for x, y in zip(la, lb):
    x, y = np.asarray(x), np.asarray(y)
    if np.issubdtype(y.dtype, np.integer) or y.dtype == bool:
      np.testing.assert_array_equal(x, y)
    else:
      np.testing.assert_allclose(x, y, rtol=rtol, atol=atol_scale * max(1.0, float(np.abs(y).max())))
