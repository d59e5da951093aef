"""Pretext tasks: their data transforms against independent references (the contract test
in test_method_contract.py covers their train steps like every other method's)."""
import jax.numpy as jnp
import numpy as np
import pytest
from reference import load_config, requires_cifar

from sslax.config_utils import ConfigError
from sslax.methods import METHODS
from sslax.methods.rotnet import rotate_all


def test_rotations_and_labels_match_the_pixel_geometry():
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, size=(3, 5, 5, 2)).astype(np.float32)
  rotated, labels = rotate_all(jnp.asarray(images))
  rotated, labels = np.asarray(rotated), np.asarray(labels)
  np.testing.assert_array_equal(labels, np.repeat(np.arange(4), 3))
  s = images.shape[1]
  for k in range(4):
    for n in range(3):
      out, src = rotated[3 * k + n], images[n]
      for i in range(s):
        for j in range(s):
          # Counter-clockwise by k quarter turns: the pixel at (i, j) came from here.
          ii, jj = i, j
          for _ in range(k):
            ii, jj = jj, s - 1 - ii
          np.testing.assert_array_equal(out[i, j], src[ii, jj])
  assert not np.array_equal(rotated[3], rotated[0])  # 90 degrees changes a random image.


def test_rotnet_config_checks_the_classifier_size():
  config, _ = load_config("rotnet", **{"model.projector.output_dim": 10})
  with pytest.raises(ConfigError, match="output_dim=4"):
    METHODS["rotnet"].validate_config(config)


PRETEXT = ("rotnet",)


@requires_cifar
@pytest.mark.parametrize("name", PRETEXT)
def test_loss_decreases_over_30_tiny_steps_on_cifar10(name, tmp_path):
  import jax

  from sslax import parallel, train
  from sslax.metrics import read_metrics

  config, _ = load_config(name, **{"data.train_split": "train[:1024]", "total_steps": 30, "warmup_steps": 0,
                                   "log_every_steps": 1, "knn.at_end": False, "checkpoint.every_steps": 30})
  train.train_and_evaluate(config, str(tmp_path), mesh=parallel.make_mesh(jax.devices()[:2]))
  losses = [r["loss"] for r in read_metrics(str(tmp_path)) if "loss" in r]
  assert len(losses) == 30 and np.isfinite(losses).all()
  assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.05, losses
