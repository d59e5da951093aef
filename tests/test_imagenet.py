"""The ImageNet presets run on a test-sized fake ImageNet (TFDS `imagenet2012` of JPEGs of varied
sizes, prepared offline by sslax.data.make_fake_imagenet), streamed and cropped from full images."""
import jax
import numpy as np
import pytest

from sslax import parallel, train
from sslax.config_utils import load_config_file
from sslax.data import load_dataset
from sslax.data.make_fake_imagenet import make_fake_imagenet
from sslax.data.streaming import StreamingDataset


@pytest.fixture(scope="module")
def fake_imagenet(tmp_path_factory):
  return make_fake_imagenet(str(tmp_path_factory.mktemp("fake_imagenet")), num_train=48, num_val=16, num_classes=4,
                            min_size=48, max_size=120, file_format="array_record")


SMALL = {"batch_size": 8, "model.width_multiplier": 0.0625, "augment.crop_size": 32, "data.image_size": 40,
         "model.projector.hidden_dims": (32,), "model.projector.output_dim": 16, "total_epochs": None,
         "total_steps": 5, "warmup_epochs": None, "warmup_steps": 1, "log_every_steps": 1, "knn.every_steps": 0,
         "knn.max_train_examples": 48, "knn.max_test_examples": 16, "knn.k": 5, "checkpoint.async_save": False,
         "data.num_workers": 2}


pytestmark = pytest.mark.xdist_group("imagenet")  # One worker: the fake ImageNet and the pretraining are shared.


def _pretrain(spec, data_dir, workdir, **extra):
  config = load_config_file(spec, dict(SMALL, **extra, **{"data.data_dir": data_dir}))
  assert config.model.backbone == "resnet50" and config.data.in_memory is False
  return config, train.train_and_evaluate(config, workdir, mesh=parallel.make_mesh(jax.devices()[:2]))


@pytest.fixture(scope="module")
def simclr_imagenet(fake_imagenet, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("simclr_imagenet"))
  return workdir, _pretrain("configs/simclr.py:imagenet", fake_imagenet, workdir)[1]


def test_imagenet_presets_stream_the_data_and_run_5_steps(fake_imagenet, simclr_imagenet, tmp_path):
  config = load_config_file("configs/simclr.py:imagenet", dict(SMALL, **{"data.data_dir": fake_imagenet}))
  data = load_dataset(config.data, "train")
  assert isinstance(data, StreamingDataset) and len(data) == 48 and data.num_classes == 1000
  # tf.data cannot read ArrayRecord; in memory, the split is decoded by the same reader.
  with config.unlocked():
    config.data.in_memory = True
  memory = load_dataset(config.data, "validation")
  with config.unlocked():
    config.data.in_memory = False
  stream = load_dataset(config.data, "validation")
  np.testing.assert_array_equal(memory.images, np.asarray(stream.images))
  np.testing.assert_array_equal(memory.labels, np.asarray(stream.labels))
  assert memory.images.shape == (16, 40, 40, 3) and set(memory.labels.tolist()) <= set(range(4))
  _, byol = _pretrain("configs/byol.py:imagenet", fake_imagenet, str(tmp_path / "byol"),
                      **{"model.predictor.hidden_dims": (32,), "model.predictor.output_dim": 16})
  for summary in (simclr_imagenet[1], byol):
    assert summary["step"] == 5 and np.isfinite(summary["loss"])
    assert 0.0 <= summary["knn_top1"] <= 1.0  # The final kNN streamed the validation split.


def test_imagenet_linear_protocol_trains_a_head_on_streamed_crops(simclr_imagenet, tmp_path):
  from sslax.evaluate.run import evaluate

  eval_config = load_config_file("configs/eval.py:imagenet_linear", {
      "pretrained_workdir": simclr_imagenet[0], "finetune.batch_size": 8, "finetune.image_size": 32,
      "finetune.epochs": 1.0, "finetune.eval_batch_size": 16})
  results = evaluate(eval_config, str(tmp_path / "eval"))
  (row,) = results["results"]
  assert row["protocol"] == "linear (augmented)" and row["labels"] == "100%" and row["steps"] == 6
  assert 0.0 <= row["top1"] <= 1.0
