"""The launch scripts' --dry-run: the commands and manifests they print, and that they call nothing."""
from __future__ import annotations

import os
import shlex
import subprocess

import pytest
import yaml

from reference import REPO

TOOLS = ("gcloud", "sbatch", "srun", "scontrol", "kubectl")


@pytest.fixture
def fake_tools(tmp_path):
  """A PATH whose gcloud/sbatch/srun/scontrol/kubectl only record that they were called."""
  bin_dir, calls = tmp_path / "bin", tmp_path / "calls.txt"
  bin_dir.mkdir()
  for tool in TOOLS:
    (bin_dir / tool).write_text(f'#!/bin/sh\necho "{tool} $*" >> {calls}\n')
    (bin_dir / tool).chmod(0o755)
  return bin_dir, calls


def launch(script, args, fake_tools, **env):
  bin_dir, calls = fake_tools
  environ = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SSLAX_"))}
  environ.update(PATH=f"{bin_dir}:{os.environ['PATH']}", **env)
  result = subprocess.run(["bash", os.path.join(REPO, "launch", script), *args], env=environ, capture_output=True,
                          text=True, timeout=60)
  called = calls.read_text() if calls.exists() else ""
  return result, called


def commands(stdout: str) -> list[list[str]]:
  """The printed '+ ' commands, split as the shell would."""
  return [shlex.split(line[2:]) for line in stdout.splitlines() if line.startswith("+ ")]


OVERRIDE = "--config.optimizer.name=it's sgd"  # Quoting survives the remote command line.


def test_tpu_vm_dry_run_prints_create_install_and_train_on_every_worker(fake_tools):
  result, called = launch("tpu_vm.sh", ["--dry-run", "ssl", "us-central2-b", "v4-32", "configs/simclr.py:cifar10",
                                        "gs://bucket/run", "--config.batch_size=4096", OVERRIDE],
                          fake_tools, SSLAX_REPO_URL="https://example.com/sslax.git", TFDS_DATA_DIR="gs://bucket/tfds")
  assert result.returncode == 0, result.stderr
  assert called == ""
  assert "4 worker(s)" in result.stdout and "coordinator: worker 0" in result.stdout
  create, install, train = commands(result.stdout)
  assert create[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "create"]
  assert create[create.index("--accelerator-type") + 1] == "v4-32"
  for ssh in (install, train):
    assert ssh[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh"] and "--worker=all" in ssh
  assert "https://example.com/sslax.git" in install[-1]
  remote = shlex.split(train[train.index("--command") + 1])
  assert "SSLAX_DISTRIBUTED=1" in remote and "TFDS_DATA_DIR=gs://bucket/tfds" in remote
  main = remote.index("sslax.main")
  assert remote[main + 1:main + 5] == ["--config=configs/simclr.py:cifar10", "--workdir=gs://bucket/run",
                                       "--config.batch_size=4096", OVERRIDE]


@pytest.mark.parametrize("accelerator,workers", [("v5litepod-8", 1), ("v5litepod-16", 4), ("v5p-32", 4),
                                                 ("v3-8", 1), ("v6e-64", 16)])
def test_tpu_vm_worker_count_and_queued_resources(fake_tools, accelerator, workers):
  result, called = launch("tpu_vm.sh", ["--dry-run", "ssl", "zone", accelerator, "c", "gs://b/w"], fake_tools,
                          SSLAX_REPO_URL="r", TFDS_DATA_DIR="t", QUEUED="1", SPOT="1")
  assert result.returncode == 0, result.stderr
  assert called == "" and f"{workers} worker(s)" in result.stdout
  create = commands(result.stdout)[0]
  assert create[:5] == ["gcloud", "compute", "tpus", "queued-resources", "create"] and "--spot" in create


@pytest.mark.parametrize("args,message", [(["n", "z", "v4-8", "c", "/local/dir"], "must be a gs:// path"),
                                          (["n", "z", "v9-8", "c", "gs://b/w"], "unknown accelerator type"),
                                          (["n", "z"], "launch/tpu_vm.sh [--dry-run] NAME")])
def test_tpu_vm_rejects_bad_arguments(fake_tools, args, message):
  result, called = launch("tpu_vm.sh", ["--dry-run", *args], fake_tools, SSLAX_REPO_URL="r", TFDS_DATA_DIR="t")
  assert result.returncode == 2 and message in result.stderr and called == ""


def test_slurm_dry_run_prints_sbatch_and_one_process_per_gpu(fake_tools):
  result, called = launch("slurm.sbatch", ["--dry-run", "configs/simclr.py:cifar10", "/shared/runs/simclr", OVERRIDE],
                          fake_tools, NODES="4", GPUS_PER_NODE="8", PARTITION="gpu")
  assert result.returncode == 0, result.stderr
  assert called == ""
  assert "processes: 32 (4 node(s) x 8 GPU(s)" in result.stdout and "coordinator: the first node" in result.stdout
  sbatch, srun = commands(result.stdout)
  submit = sbatch[sbatch.index("sbatch"):]
  assert {"--nodes=4", "--ntasks-per-node=8", "--gpus-per-node=8", "--partition=gpu"} <= set(submit)
  assert submit[-3:] == ["configs/simclr.py:cifar10", "/shared/runs/simclr", OVERRIDE]
  assert srun[0] == "srun" and "SSLAX_DISTRIBUTED=1" in srun
  assert srun[srun.index("sslax.main") + 1:] == ["--config=configs/simclr.py:cifar10",
                                                 "--workdir=/shared/runs/simclr", OVERRIDE]
  # The #SBATCH header asks for SIGTERM before the time limit (sslax saves, then requeues).
  header = open(os.path.join(REPO, "launch", "slurm.sbatch")).read()
  assert "#SBATCH --signal=TERM@" in header and "#SBATCH --requeue" in header


def test_slurm_rejects_a_workdir_other_nodes_cannot_see(fake_tools):
  result, called = launch("slurm.sbatch", ["--dry-run", "c", "runs/local"], fake_tools)
  assert result.returncode == 2 and "'runs/local'" in result.stderr and called == ""


def _manifest(stdout: str) -> list[dict]:
  body = "\n".join(line for line in stdout.splitlines()[2:] if not line.startswith("+ "))
  return list(yaml.safe_load_all(body))


def test_gke_gpu_manifest_has_indexed_pods_and_pod_zero_as_coordinator(fake_tools):
  result, called = launch("gke.sh", ["--dry-run", "simclr", "configs/simclr.py:cifar10", "gs://b/w", OVERRIDE],
                          fake_tools, IMAGE="repo/sslax:1", ACCELERATOR="gpu", NODES="3", TFDS_DATA_DIR="gs://b/tfds")
  assert result.returncode == 0, result.stderr
  assert called == "" and commands(result.stdout) == [["kubectl", "apply", "-f", "-"]]
  service, job = _manifest(result.stdout)
  assert service["kind"] == "Service" and service["spec"]["clusterIP"] == "None"
  spec = job["spec"]
  assert spec["completionMode"] == "Indexed" and spec["completions"] == spec["parallelism"] == 3
  assert spec["template"]["spec"]["subdomain"] == service["metadata"]["name"] == "simclr"
  container = spec["template"]["spec"]["containers"][0]
  assert container["image"] == "repo/sslax:1" and container["resources"]["limits"] == {"nvidia.com/gpu": 8}
  assert container["command"][3:] == ["--config=configs/simclr.py:cifar10", "--workdir=gs://b/w",
                                      "--coordinator_address=simclr-0.simclr:8476", "--num_processes=3",
                                      "--process_id=$(JOB_COMPLETION_INDEX)", OVERRIDE]
  assert {"name": "TFDS_DATA_DIR", "value": "gs://b/tfds"} in container["env"]


def test_gke_tpu_manifest_leaves_the_coordinator_to_jax(fake_tools):
  result, called = launch("gke.sh", ["--dry-run", "v5e", "c", "gs://b/w"], fake_tools, IMAGE="img",
                          TPU_TOPOLOGY="4x4", TPU_ACCELERATOR="tpu-v5-lite-podslice")
  assert result.returncode == 0, result.stderr
  assert called == "" and "4 pod(s)" in result.stdout
  _, job = _manifest(result.stdout)
  pod = job["spec"]["template"]["spec"]
  assert job["spec"]["completions"] == 4
  assert pod["nodeSelector"] == {"cloud.google.com/gke-tpu-accelerator": "tpu-v5-lite-podslice",
                                 "cloud.google.com/gke-tpu-topology": "4x4"}
  assert pod["containers"][0]["resources"]["limits"] == {"google.com/tpu": 4}
  assert not any(a.startswith("--coordinator_address") for a in pod["containers"][0]["command"])
