"""Training loop: checkpoints, exact resume, signals, bad input, and the CLI end to end."""
import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from reference import REPO, requires_cifar, restore_train_state, subprocess_env

from sslax import parallel, train
from sslax.checkpoint import CheckpointError, Checkpointer
from sslax.data import DatasetNotFoundError
from sslax.metrics import read_metrics

ONE_DEVICE = lambda: parallel.make_mesh(jax.devices()[:1])


def _params(workdir):
  """(step, params, (opt_state, probe)) restored from the latest checkpoint of a workdir written by _run."""
  state = restore_train_state(_CONFIGS[workdir], workdir)
  return int(state.step), state.params, (state.opt_state, state.probe)


_CONFIGS = {}  # workdir -> the config it was trained with.


def _run(config, workdir, **overrides):
  with config.unlocked():
    for k, v in overrides.items():
      node, *path = k.split(".")
      target = config
      for part in [node, *path][:-1]:
        target = target[part]
      target[[node, *path][-1]] = v
  _CONFIGS[workdir] = config
  return train.train_and_evaluate(config, workdir, mesh=ONE_DEVICE())


def test_resume_is_bitwise_identical_to_uninterrupted_run(tiny_config, tmp_path):
  import copy

  full, parts = str(tmp_path / "full"), str(tmp_path / "parts")
  summary = _run(copy.deepcopy(tiny_config), full)
  assert summary["step"] == 6
  first = _run(copy.deepcopy(tiny_config), parts, stop_at_step=3)
  assert first["step"] == 3
  second = _run(copy.deepcopy(tiny_config), parts)
  assert second["step"] == 6
  step_a, params_a, opt_a = _params(full)
  step_b, params_b, opt_b = _params(parts)
  assert step_a == step_b == 6
  for a, b in zip(jax.tree.leaves((params_a, opt_a)), jax.tree.leaves((params_b, opt_b))):
    np.testing.assert_array_equal(a, b)
  # The logged losses of steps 4-6 are the same too.
  loss = lambda w: {r["step"]: r["loss"] for r in read_metrics(w) if "loss" in r}
  assert loss(full)[6] == loss(parts)[6]


def test_time_budget_stops_with_a_checkpoint_and_a_final_knn(tiny_config, tmp_path):
  workdir = str(tmp_path / "budget")
  summary = _run(tiny_config, workdir, max_train_minutes=1e-9)  # Spent after the first step.
  assert summary["stopped_by_time_budget"] and summary["step"] == 1
  assert _params(workdir)[0] == 1
  assert 0.0 <= summary["knn_top1"] <= 1.0  # The final kNN runs at the budget's end too.


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tiny_config, tmp_path):
  workdir = str(tmp_path / "diverge")
  _run(tiny_config, workdir, stop_at_step=3)
  saved = sorted(os.listdir(os.path.join(workdir, "checkpoints")))
  with pytest.raises(train.NonFiniteLossError, match="last good checkpoint"):
    _run(tiny_config, workdir, stop_at_step=None, **{"optimizer.base_learning_rate": float("nan")})
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == saved
  assert _params(workdir)[0] == 3


class _LoopSpy:
  """Records, in order, when the loop dispatches a step, reads a step's loss and saves."""

  def __init__(self, monkeypatch):
    self.events = []
    real_make, real_save = train.make_train_step, train.Checkpointer.save
    spy = self

    class Metrics(dict):
      def __getitem__(self, key):
        if key == "loss":
          spy.events.append(("read", self.step))
        return super().__getitem__(key)

    def make_train_step(setup):
      compiled = []

      class Lowered:
        def __init__(self, lowered):
          self.lowered = lowered

        def compile(self):
          compiled.append(self.lowered.compile())
          return run

      def run(state, batch):
        state, metrics = compiled[0](state, batch)
        out = Metrics(metrics)
        out.step = len([e for e in spy.events if e[0] == "dispatch"]) + 1
        spy.events.append(("dispatch", out.step))
        return state, out

      class Jitted:
        def lower(self, *args):
          return Lowered(real_make(setup).lower(*args))

      return Jitted()

    def save(checkpointer, state, step):
      spy.events.append(("save", step))
      return real_save(checkpointer, state, step)

    monkeypatch.setattr(train, "make_train_step", make_train_step)
    monkeypatch.setattr(train.Checkpointer, "save", save)


@pytest.mark.parametrize("sync", [False, True])
def test_loop_reads_metrics_one_step_behind_and_checks_losses_before_saving(tiny_config, tmp_path, monkeypatch,
                                                                            sync):
  spy = _LoopSpy(monkeypatch)
  _run(tiny_config, str(tmp_path / "w"), stop_at_step=5, sync_every_step=sync, **{"checkpoint.every_steps": 2})
  events = spy.events
  dispatched = [e for e in events if e[0] == "dispatch"]
  assert dispatched == [("dispatch", i) for i in range(1, 6)]
  for i in range(1, 5):
    # Asynchronous: step i+1 is queued before the host reads step i, unless step i is saved
    # (2 and 4). Synchronous: every step is read before the next is queued.
    read_first = events.index(("read", i)) < events.index(("dispatch", i + 1))
    assert read_first == (sync or i % 2 == 0), events
  for step in (2, 4, 5):  # Every save comes after the loss of the step it saves was read.
    assert events.index(("read", step)) < events.index(("save", step)), events


def test_unreadable_checkpoint_is_a_clear_error_and_nothing_is_deleted(tiny_config, tmp_path, monkeypatch):
  workdir = str(tmp_path / "corrupt")
  _run(tiny_config, workdir, stop_at_step=3)
  step_dir = os.path.join(workdir, "checkpoints", "3")
  # Truncate every array file of the checkpoint.
  damaged = 0
  for root, _, files in os.walk(step_dir):
    for name in files:
      if not name.endswith((".json", "_METADATA")) and "metadata" not in name.lower():
        with open(os.path.join(root, name), "wb") as f:
          f.write(b"garbage")
        damaged += 1
  assert damaged
  before = sorted(os.listdir(os.path.join(workdir, "checkpoints")))
  closed, close = [], Checkpointer.close
  monkeypatch.setattr(Checkpointer, "close", lambda self: (closed.append(self.manager is not None), close(self)))
  with pytest.raises(CheckpointError, match="Could not restore checkpoint step 3.*Nothing was deleted"):
    _run(tiny_config, workdir, stop_at_step=None)
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == before
  assert closed == [True]  # The error still closed orbax's manager (and its threads), once.


def test_missing_dataset_is_a_clear_error(cifar_tiny_config, tmp_path):
  tiny_config = cifar_tiny_config
  with pytest.raises(DatasetNotFoundError, match=r"not found in .*empty_dir.*TFDS_DATA_DIR"):
    _run(tiny_config, str(tmp_path / "w"), **{"data.data_dir": str(tmp_path / "empty_dir")})
  with pytest.raises(DatasetNotFoundError, match="does not exist"):
    _run(tiny_config, str(tmp_path / "w2"), **{"data.source": "folder", "data.folder": str(tmp_path / "nope")})


def test_invalid_choice_lists_valid_values(tiny_config, tmp_path):
  with pytest.raises(ValueError, match=r"config.optimizer.name; valid choices: lars, sgd, adamw"):
    _run(tiny_config, str(tmp_path / "w"), **{"optimizer.name": "adam"})


def _cli(args, env_extra=None, **kw):
  env = subprocess_env(2, **(env_extra or {}))
  return subprocess.run([sys.executable, "-m", "sslax.main", *args], cwd=REPO, env=env, capture_output=True,
                        text=True, **kw)


@requires_cifar
def test_cli_end_to_end_on_tiny_preset(tmp_path):
  workdir = str(tmp_path / "cli")
  out = _cli(["--config=configs/simclr.py:tiny", f"--workdir={workdir}", "--config.knn.max_train_examples=500",
              "--config.knn.max_test_examples=200"], timeout=900)
  assert out.returncode == 0, out.stderr[-3000:]
  records = read_metrics(workdir)
  steps = [r["step"] for r in records if "loss" in r]
  assert steps == [2, 4, 6]
  for key in ("loss", "learning_rate", "contrastive_top1", "embedding_std", "images_per_sec", "step_time_s"):
    assert all(np.isfinite(r[key]) for r in records if "loss" in r), key
  knn = [r for r in records if "knn_top1" in r]
  assert len(knn) == 1 and 0.0 <= knn[0]["knn_top1"] <= 1.0
  assert os.path.isdir(os.path.join(workdir, "checkpoints", "6"))
  with open(os.path.join(workdir, "training_curves.png"), "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  assert any(name.startswith("events") for name in os.listdir(os.path.join(workdir, "tb")))
  with open(os.path.join(workdir, "config.json")) as f:
    assert json.load(f)["method"] == "simclr"


def test_cli_unknown_config_key_is_a_clear_error(tmp_path):
  out = _cli(["--config=configs/simclr.py:tiny", f"--workdir={tmp_path}", "--config.optimiser.name=sgd"], timeout=300)
  assert out.returncode != 0
  assert "optimiser" in out.stderr and "optimizer" in out.stderr
  out = _cli(["--config=configs/simclr.py:nosuchpreset", f"--workdir={tmp_path}"], timeout=300)
  assert out.returncode != 0 and "valid presets: cpu, cifar10, imagenet, tiny" in out.stderr
  out = _cli(["--config=configs/simclr.py:tiny,bogus=1", f"--workdir={tmp_path}"], timeout=300)
  assert out.returncode != 0 and "Unknown config option 'bogus'" in out.stderr


def test_sigterm_saves_a_restorable_checkpoint(tmp_path):
  workdir = str(tmp_path / "sig")
  args = ["--config=configs/simclr.py:tiny", f"--workdir={workdir}", "--config.data.source=synthetic",
          "--config.total_steps=100000",
          "--config.checkpoint.every_steps=100000", "--config.log_every_steps=1"]
  env = subprocess_env(2)
  proc = subprocess.Popen([sys.executable, "-m", "sslax.main", *args], cwd=REPO, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  deadline = time.time() + 600
  while time.time() < deadline and len([r for r in read_metrics(workdir) if "loss" in r]) < 3:
    time.sleep(0.5)
  proc.send_signal(signal.SIGTERM)
  output, _ = proc.communicate(timeout=300)
  assert proc.returncode == 0, output[-3000:]
  steps = [int(s) for s in os.listdir(os.path.join(workdir, "checkpoints")) if s.isdigit()]
  assert len(steps) == 1 and steps[0] >= 3, (steps, output[-2000:])
  # Resume from it for two more steps.
  out = _cli(args[:3] + [f"--config.stop_at_step={steps[0] + 2}", "--config.knn.every_steps=0"], timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  assert f"Resumed from checkpoint step {steps[0]}" in out.stderr
