"""The CPU host settings of sslax/host.py: one XLA device per core, tcmalloc or glibc's malloc on huge pages."""
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
    print("run", os.environ.get("GLIBC_TUNABLES", ""), os.environ.get("LD_PRELOAD", ""), sys.argv[1:], flush=True)
    config = ml_collections.ConfigDict({"batch_size": 6, "cpu_devices": int(sys.argv[1]),
                                        "cpu_hugepages": sys.argv[2] == "on", "cpu_malloc": sys.argv[3]})
    host.reexec_with_fast_malloc(config)
    print("set", host.set_cpu_devices(config), flush=True)
    import jax
    print("devices", jax.device_count(), flush=True)
""")


def test_find_tcmalloc_prefers_the_minimal_soname(tmp_path):
  empty, full, minimal = (tmp_path / name for name in ("empty", "full", "minimal"))
  for directory, names in ((empty, ()), (full, ("libtcmalloc.so", "libtcmalloc.so.4", "libtcmalloc.so.4.5.10")),
                           (minimal, ("libtcmalloc_minimal.so.4", "libtcmalloc_minimal.so.4.5.10"))):
    directory.mkdir()
    for name in names:
      (directory / name).write_bytes(b"")
  assert host.find_tcmalloc((str(empty),)) is None
  assert host.find_tcmalloc((str(empty), str(full))) == str(full / "libtcmalloc.so.4")
  assert host.find_tcmalloc((str(full), str(minimal))) == str(minimal / "libtcmalloc_minimal.so.4")


def test_malloc_environment_preloads_tcmalloc_else_glibc_on_huge_pages():
  if sys.platform != "linux" or host._glibc_version() is None or host._glibc_version() < host._MIN_GLIBC:
    pytest.skip("glibc >= 2.35 on Linux only")
  lib, huge = "/lib/libtcmalloc_minimal.so.4", {"GLIBC_TUNABLES": host.HUGEPAGE_TUNABLE}
  quiet = {"TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD": str(1 << 40)}
  assert host.malloc_environment(_config(), {}, tcmalloc=lib) == {"LD_PRELOAD": lib, **quiet}
  assert host.malloc_environment(_config(cpu_malloc="tcmalloc"), {"LD_PRELOAD": "/x/libfoo.so"}, tcmalloc=lib) == {
      "LD_PRELOAD": f"/x/libfoo.so {lib}", **quiet}
  assert host.malloc_environment(_config(), {}, tcmalloc=None) == huge
  assert host.malloc_environment(_config(cpu_malloc="glibc"), {}, tcmalloc=lib) == huge
  assert host.malloc_environment(_config(cpu_malloc="glibc", cpu_hugepages=False), {}, tcmalloc=lib) == {}
  # An allocator the user preloads (or ours, after the restart) is left alone.
  assert host.malloc_environment(_config(), {"LD_PRELOAD": "libjemalloc.so.2"}, tcmalloc=lib) == {}
  assert host.malloc_environment(_config(), {"LD_PRELOAD": lib}, tcmalloc=lib) == {}
  with pytest.raises(ValueError, match="config.cpu_malloc='tcmalloc' but no libtcmalloc"):
    host.malloc_environment(_config(cpu_malloc="tcmalloc"), {}, tcmalloc=None)
  with pytest.raises(ValueError, match="cpu_malloc='jemalloc'; valid choices: auto, tcmalloc, glibc"):
    host.malloc_environment(_config(cpu_malloc="jemalloc"), {}, tcmalloc=lib)


@pytest.mark.parametrize("cpu_devices, hugepages, malloc", [(0, "on", "glibc"), (3, "off", "glibc"),
                                                             (2, "on", "auto")])
def test_entry_point_restarts_once_with_its_malloc_and_splits_the_cpu(tmp_path, cpu_devices, hugepages, malloc):
  """A child process as `python -m sslax.main` runs it: restarted once (same arguments, the
  earlier settings kept) with tcmalloc preloaded where 'auto' finds it, else with hugetlb on
  where asked, then split into the devices asked for."""
  tcmalloc = host.find_tcmalloc() if malloc == "auto" and sys.platform == "linux" else None
  if hugepages == "on" and not tcmalloc and not host.hugepages_wanted(_config(), environ={}):
    pytest.skip("glibc >= 2.35 on Linux only")
  script = tmp_path / "child.py"
  script.write_text(_CHILD)
  env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "LD_PRELOAD")}
  env["GLIBC_TUNABLES"] = "glibc.malloc.check=0"
  args = [str(cpu_devices), hugepages, malloc]
  out = subprocess.run([sys.executable, str(script), *args], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  runs = [line for line in out.stdout.splitlines() if line.startswith("run")]
  first = f"run glibc.malloc.check=0  {args}"
  if tcmalloc:
    assert runs == [first, f"run glibc.malloc.check=0 {tcmalloc} {args}"]
  elif hugepages == "on":
    assert runs == [first, f"run glibc.malloc.check=0:glibc.malloc.hugetlb=1  {args}"]
  else:
    assert runs == [first]
  cores = len(os.sched_getaffinity(0))
  expected = cpu_devices or host.auto_cpu_devices(_config(batch_size=6), cores=cores)
  assert f"devices {expected}" in out.stdout
  assert f"set {None if expected == 1 and not cpu_devices else expected}" in out.stdout
