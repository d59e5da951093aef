"""The CPU host settings of sslax/host.py: one XLA device per core and malloc on huge pages."""
import os
import subprocess
import sys
import textwrap

import ml_collections
import pytest
from reference import REPO

from sslax import host


def _config(**fields):
  return ml_collections.ConfigDict(fields)


@pytest.mark.parametrize("cores, batch_size, expected", [
    (2, 128, 2), (2, 7, 1), (1, 128, 1), (4, 6, 3), (16, 256, 8), (6, 0, 6), (3, None, 3)])
def test_auto_cpu_devices_is_a_divisor_of_the_batch_up_to_the_cores(cores, batch_size, expected):
  assert host.auto_cpu_devices(_config(batch_size=batch_size), cores=cores) == expected


def test_set_cpu_devices_keeps_an_explicit_device_count_and_rejects_negative_counts():
  # conftest.py chose 8 devices through XLA_FLAGS; neither auto nor an explicit count overrides it.
  assert "xla_force_host_platform_device_count=8" in os.environ["XLA_FLAGS"]
  assert host.set_cpu_devices(_config(batch_size=128, cpu_devices=0)) is None
  assert host.set_cpu_devices(_config(batch_size=128, cpu_devices=3)) is None
  with pytest.raises(ValueError, match="config.cpu_devices=-1"):
    host.set_cpu_devices(_config(batch_size=128, cpu_devices=-1))


def test_hugepages_wanted_only_when_on_and_not_already_set():
  if sys.platform != "linux" or host._glibc_version() is None or host._glibc_version() < host._MIN_GLIBC:
    pytest.skip("glibc >= 2.35 on Linux only")
  assert host.hugepages_wanted(_config(), environ={})
  assert host.hugepages_wanted(_config(cpu_hugepages=True), environ={"GLIBC_TUNABLES": "glibc.malloc.check=0"})
  assert not host.hugepages_wanted(_config(cpu_hugepages=False), environ={})
  assert not host.hugepages_wanted(_config(), environ={"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"})


_CHILD = textwrap.dedent("""
    import os, sys
    import ml_collections
    from sslax import host
    print("run", os.environ.get("GLIBC_TUNABLES", ""), sys.argv[1:], flush=True)
    config = ml_collections.ConfigDict({"batch_size": 6, "cpu_devices": int(sys.argv[1]),
                                        "cpu_hugepages": sys.argv[2] == "on"})
    host.reexec_with_hugepages(config)
    print("set", host.set_cpu_devices(config), flush=True)
    import jax
    print("devices", jax.device_count(), flush=True)
""")


@pytest.mark.parametrize("cpu_devices, hugepages", [(0, "on"), (3, "off")])
def test_entry_point_restarts_once_with_hugepages_and_splits_the_cpu(tmp_path, cpu_devices, hugepages):
  """A child process as `python -m sslax.main` runs it: restarted once (same arguments, the
  earlier tunables kept) with hugetlb on, then split into the devices asked for."""
  if hugepages == "on" and not host.hugepages_wanted(_config(), environ={}):
    pytest.skip("glibc >= 2.35 on Linux only")
  script = tmp_path / "child.py"
  script.write_text(_CHILD)
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env["GLIBC_TUNABLES"] = "glibc.malloc.check=0"
  out = subprocess.run([sys.executable, str(script), str(cpu_devices), hugepages], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  runs = [line for line in out.stdout.splitlines() if line.startswith("run")]
  args = [str(cpu_devices), hugepages]
  if hugepages == "on":
    assert runs == [f"run glibc.malloc.check=0 {args}", f"run glibc.malloc.check=0:glibc.malloc.hugetlb=1 {args}"]
  else:
    assert runs == [f"run glibc.malloc.check=0 {args}"]
  cores = len(os.sched_getaffinity(0))
  expected = cpu_devices or host.auto_cpu_devices(_config(batch_size=6), cores=cores)
  assert f"devices {expected}" in out.stdout
  assert f"set {None if expected == 1 and not cpu_devices else expected}" in out.stdout
