r"""SimCLR train-step throughput, compile time, peak memory and MFU on a GPU or TPU host.

Cases, each in float32 and bfloat16 (`config.model.dtype`):
  resnet50_224    configs/simclr.py:cifar10 with a ResNet-50 (ImageNet stem) on 224x224 crops of
                  256x256 source images, batch --batch_size (512), no online probe;
                  --steps (30) timed steps after --warmup_steps (2).
  cifar10_preset  configs/simclr.py:cifar10 as it is (ResNet-18 CIFAR stem, batch 512, 32x32,
                  LARS, online probe on 10 labels) for --cifar_steps (300) timed steps, cycling
                  through --cifar_batches (4) batches already on the devices.

The images are synthetic uint8 noise (np.random.default_rng(0)): no TensorFlow and no data
set is needed; the augmentation runs inside the step as in training, so the cost is the same.

Measured per case:
  * compile time of `make_train_step(setup).lower(state, batch).compile()`;
  * images/s = batch * steps / seconds (an image = its two views, as train_speed.py counts)
    and crops/s (each view is a crop through the encoder);
  * FLOPs per step from the compiled step's cost analysis (the whole step: augmentation,
    forward, backward, optimizer; per device), and the "model FLOPs" cross-check 3 x the
    forward FLOPs of the encoder (backbone + projector) on all the crops;
  * MFU = achieved FLOP/s / the device kind's peak (bf16 runs: the bf16 dense peak; float32
    runs: both the TF32 dense peak, which XLA's default precision lets cuDNN/cuBLAS use for
    f32 convolutions and matmuls on Ampere and later, and the plain (non-tensor-core) FP32 peak);
  * peak device memory (`memory_stats()["peak_bytes_in_use"]`, None on CPU) and XLA's
    compiled memory analysis.

Each case runs in its own subprocess (fresh compile cache, its own memory peak), with a
time limit; a failing case (e.g. out of memory) is recorded as {"error": ...} and, when it
ran out of memory, retried once at half the batch (--halve_batch_on_oom).

On one H200 (cheap cases and bf16 first; each case at most 170 s, the whole run at most 360 s;
the host lacks ml_collections, whose wheel is in .whl/):
  pip install --no-deps --no-index .whl/ml_collections-1.1.0-py3-none-any.whl
  python benchmarks/accelerator.py --cases=cifar10_preset,resnet50_224 --dtypes=bfloat16,float32 \
      --case_timeout_s=170 --deadline_s=360 --out=$OUT/accelerator.json

CPU smoke test (both cases tiny, both dtypes; about 6 minutes on 2 cores, where XLA takes about
40 s to compile each case's state initialiser and again its step):
  python benchmarks/accelerator.py --backbone=resnet18 --width_multiplier=0.0625 --batch_size=16 \
      --image_size=32 --steps=2 --cifar_batch_size=16 --cifar_steps=3 --out=/tmp/accelerator.json
"""
from __future__ import annotations

import importlib.util
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from absl import app, flags, logging  # noqa: E402

# The repository this file belongs to comes first on sys.path (the children run this file too).
_REPO = Path(__file__).resolve().parents[1]
if str(_REPO) not in sys.path:
  sys.path.insert(0, str(_REPO))

CASES = ("resnet50_224", "cifar10_preset")
DTYPES = ("float32", "bfloat16")

_CASES = flags.DEFINE_list("cases", list(CASES), f"Cases to run, from {', '.join(CASES)}.")
_DTYPES = flags.DEFINE_list("dtypes", list(DTYPES), "config.model.dtype values to run each case in.")
_CONFIG_FILE = flags.DEFINE_string("config_file", "configs/simclr.py",
                                   "Method config file (relative to the repository root); its cifar10 preset is used.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 512, "resnet50_224: global batch (images; each gives two crops).")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 224, "resnet50_224: crop size (config.augment.crop_size).")
_SOURCE_SIZE = flags.DEFINE_integer("source_size", None,
                                    "resnet50_224: side of the synthetic source images (default: image_size * 8/7).")
_STEPS = flags.DEFINE_integer("steps", 30, "resnet50_224: timed steps.")
_BACKBONE = flags.DEFINE_string("backbone", "resnet50", "resnet50_224: backbone (resnet18 for a smoke test).")
_STEM = flags.DEFINE_string("stem", "imagenet", "resnet50_224: ResNet stem.")
_CIFAR_BATCH_SIZE = flags.DEFINE_integer("cifar_batch_size", None,
                                         "cifar10_preset: global batch (default: the preset's, 512).")
_CIFAR_STEPS = flags.DEFINE_integer("cifar_steps", 300, "cifar10_preset: timed steps.")
_CIFAR_BATCHES = flags.DEFINE_integer("cifar_batches", 4, "cifar10_preset: distinct device batches cycled through.")
_WIDTH_MULTIPLIER = flags.DEFINE_float("width_multiplier", None,
                                        "Both cases: ResNet width multiplier (default: the config's, 1.0).")
_WARMUP_STEPS = flags.DEFINE_integer("warmup_steps", 2, "Untimed steps after compilation, before the timed ones.")
_MODEL_FLOPS = flags.DEFINE_bool("model_flops", True,
                                  "Also count 3 x the encoder's forward FLOPs (lowered, not compiled).")
_SUBPROCESS = flags.DEFINE_bool("subprocess", True,
                                "One subprocess per case (own peak memory and compile cache); --nosubprocess runs "
                                "them in this process, where the peak memory is cumulative.")
_CASE_TIMEOUT_S = flags.DEFINE_float("case_timeout_s", 300.0, "Time limit of one case's subprocess, in seconds.")
_DEADLINE_S = flags.DEFINE_float("deadline_s", 0.0,
                                 "Whole-run budget in seconds (0: none): a case gets at most what is left, and "
                                 "one that would get less than --min_case_s is recorded as skipped.")
_MIN_CASE_S = flags.DEFINE_float("min_case_s", 45.0, "With --deadline_s: the least time worth starting a case with.")
_HALVE_BATCH_ON_OOM = flags.DEFINE_bool("halve_batch_on_oom", True,
                                        "Retry a case that ran out of device memory once at half the batch.")
_MEM_FRACTION = flags.DEFINE_float("mem_fraction", 0.95,
                                   "XLA_PYTHON_CLIENT_MEM_FRACTION for the case subprocesses (unless already set).")
_OUT = flags.DEFINE_string("out", None, "Optional JSON file for the list of results.")
_REFERENCE_FLOPS = flags.DEFINE_bool(
    "reference_flops", True,
    "Count each case's FLOPs per step on the CPU backend first (a CPU subprocess lowers the same step) and use "
    "them for the MFU: the GPU backend's cost analysis leaves out the convolutions that run as cuDNN calls.")
_FLOPS_ONLY = flags.DEFINE_bool("flops_only", False, "Only print the reference FLOPs per step of each case (CPU).")
# Internal: set by the parent for a case subprocess.
_ONE_CASE = flags.DEFINE_string("_one_case", None, "Internal: run this case only (in this process).")
_DTYPE = flags.DEFINE_string("_dtype", None, "Internal: its dtype.")
_RESULT_FILE = flags.DEFINE_string("_result_file", None, "Internal: write its result (JSON) here.")
_COUNT_FLOPS = flags.DEFINE_bool("_count_flops", False, "Internal: count the reference FLOPs of --cases x --dtypes.")

# Forwarded to the case subprocesses.
_FORWARDED = (_CONFIG_FILE, _BATCH_SIZE, _IMAGE_SIZE, _SOURCE_SIZE, _STEPS, _BACKBONE, _STEM, _CIFAR_BATCH_SIZE,
              _CIFAR_STEPS, _CIFAR_BATCHES, _WIDTH_MULTIPLIER, _WARMUP_STEPS, _MODEL_FLOPS)

# Dense peak FLOP/s per device by device-kind substring (first match wins, so the more
# specific names come first): (bf16, tf32, fp32 without tensor cores). NVIDIA datasheets
# (SXM unless named; dense, i.e. without 2:4 sparsity) and Google's Cloud TPU pages.
PEAK_FLOPS = (
    ("H200 NVL", (835e12, 417e12, 60e12)),
    ("H100 PCIe", (756e12, 378e12, 51e12)),
    ("H100 NVL", (835e12, 417e12, 60e12)),
    ("H200", (989e12, 494e12, 67e12)),
    ("H100", (989e12, 494e12, 67e12)),
    ("A100", (312e12, 156e12, 19.5e12)),
    ("TPU v4", (275e12, None, None)),
    ("TPU v5 lite", (197e12, None, None)),
    ("TPU v5e", (197e12, None, None)),
    ("TPU v5p", (459e12, None, None)),
    ("TPU v5", (459e12, None, None)),
    ("TPU v6 lite", (918e12, None, None)),
    ("TPU v6e", (918e12, None, None)),
)


def peak_flops(device_kind: str) -> dict[str, float | None]:
  """Dense peak FLOP/s of one device of this kind.

  Args:
    device_kind: `jax.devices()[0].device_kind`, e.g. 'NVIDIA H200' or 'TPU v5 lite'.

  Returns:
    {'bf16', 'tf32', 'fp32'} in FLOP/s; None where unknown (CPUs, other devices, TPUs' fp32).
  """
  for name, (bf16, tf32, fp32) in PEAK_FLOPS:
    if name.lower() in device_kind.lower():
      return {"bf16": bf16, "tf32": tf32, "fp32": fp32}
  return {"bf16": None, "tf32": None, "fp32": None}


def _flops(cost) -> float | None:
  """The 'flops' of a cost analysis: a dict, or a list of dicts (one per module) in some jax versions."""
  if cost is None:
    return None
  if isinstance(cost, dict):
    cost = [cost]
  total = [float(c["flops"]) for c in cost if c and c.get("flops") is not None]
  return sum(total) if total else None


def _load_config(config_file: str, preset: str = "cifar10"):
  """`get_config(preset)` of a config file, unlocked for the benchmark's overrides."""
  path = Path(config_file)
  path = path if path.is_absolute() else _REPO / path
  spec = importlib.util.spec_from_file_location(f"_bench_config_{path.stem}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config(preset)
  config.unlock()
  return config


def case_config(case: str, dtype: str):
  """The config of one case, and the number of training examples and label classes it stands for.

  Args:
    case: one of CASES.
    dtype: 'float32' or 'bfloat16'.

  Returns:
    (config, num_train_examples, num_classes).
  """
  config = _load_config(_CONFIG_FILE.value)
  config.model.dtype = dtype
  if _WIDTH_MULTIPLIER.value is not None:
    config.model.width_multiplier = _WIDTH_MULTIPLIER.value
  if case == "resnet50_224":
    config.model.backbone = _BACKBONE.value
    config.model.stem = _STEM.value
    config.augment.crop_size = _IMAGE_SIZE.value
    config.batch_size = _BATCH_SIZE.value
    config.online_probe.enabled = False
    # A schedule in steps (the epochs of the preset would count ImageNet epochs).
    config.total_epochs, config.warmup_epochs = None, None
    config.total_steps, config.warmup_steps = 10_000, 100
    return config, 1_281_167, 0
  if case == "cifar10_preset":
    if _CIFAR_BATCH_SIZE.value is not None:
      config.batch_size = _CIFAR_BATCH_SIZE.value
    return config, 50_000, 10
  raise ValueError(f"Unknown case {case!r}; valid: {', '.join(CASES)}.")


def _synthetic_batches(config, count: int, source_size: int, num_classes: int, needs_index: bool) -> list[dict]:
  """`count` host batches of uint8 noise images (and labels, indices), deterministic."""
  rng = np.random.default_rng(0)
  batches = []
  for i in range(count):
    n = config.batch_size
    batch = {"image": rng.integers(0, 256, size=(n, source_size, source_size, 3), dtype=np.uint8)}
    if num_classes:
      batch["label"] = rng.integers(0, num_classes, size=(n,), dtype=np.int32)
    if needs_index:
      batch["index"] = np.arange(i * n, (i + 1) * n, dtype=np.int32)
    batches.append(batch)
  return batches


def _source_size(case: str, config) -> int:
  """Side of a case's synthetic source images: crop x 8/7 for resnet50_224, CIFAR-10's 32 px otherwise."""
  if case == "resnet50_224":
    return _SOURCE_SIZE.value or round(config.augment.crop_size * 8 / 7)
  return 32


def _is_oom(message: str) -> bool:
  lowered = message.lower()
  return "resource_exhausted" in lowered or "out of memory" in lowered or "oom" in lowered.split()


def run_case(case: str, dtype: str) -> dict:
  """Builds, compiles and times one case in this process.

  Args:
    case: one of CASES.
    dtype: 'float32' or 'bfloat16'.

  Returns:
    dict of the measurements (see the module docstring).
  """
  # Imported here: the parent process of the case subprocesses must not start the
  # accelerator backend (it would take the device memory the cases need).
  import jax
  import jax.numpy as jnp

  from sslax import parallel
  from sslax.step import build_setup, create_train_state, make_train_step

  config, num_examples, num_classes = case_config(case, dtype)
  source_size = _source_size(case, config)
  if case == "resnet50_224":
    steps, num_batches = _STEPS.value, 1
  else:
    steps, num_batches = _CIFAR_STEPS.value, _CIFAR_BATCHES.value
  start = time.perf_counter()
  setup = build_setup(config, num_examples, num_classes=num_classes)
  host_batches = _synthetic_batches(config, num_batches, source_size, setup.num_classes, setup.method.needs_index)
  batches = [parallel.to_global_batch(b, setup.mesh) for b in host_batches]
  del host_batches
  state = create_train_state(setup, jax.random.PRNGKey(0))
  devices = jax.devices()
  device_kind = devices[0].device_kind
  crops_per_image = setup.method.num_views + config.augment.get("num_local_crops", 0)
  jax.block_until_ready((state, batches))
  setup_s = time.perf_counter() - start
  logging.info("%s %s: set up in %.1f s; compiling the step.", case, dtype, setup_s)

  start = time.perf_counter()
  lowered = make_train_step(setup).lower(state, batches[0])
  lower_s = time.perf_counter() - start
  start = time.perf_counter()
  step_fn = lowered.compile()
  compile_s = time.perf_counter() - start
  logging.info("%s %s: compiled in %.1f s.", case, dtype, compile_s)
  flops = _flops(step_fn.cost_analysis())
  try:
    lowered_flops = _flops(lowered.cost_analysis())
  except Exception:  # noqa: BLE001  (not every backend analyses unoptimised HLO)
    lowered_flops = None
  memory = {}
  try:
    analysis = step_fn.memory_analysis()
    for key in ("temp_size_in_bytes", "argument_size_in_bytes", "output_size_in_bytes", "alias_size_in_bytes"):
      memory[key.replace("_size_in_bytes", "_gib")] = round(getattr(analysis, key) / 2**30, 3)
  except Exception as e:  # noqa: BLE001  (not every backend has it)
    memory["error"] = f"{type(e).__name__}: {e}"[:200]

  model_flops, start = None, time.perf_counter()
  if _MODEL_FLOPS.value:
    # 3 x forward (the backward pass costs about twice the forward) of all the crops.
    size = config.augment.crop_size
    crops = jax.ShapeDtypeStruct((config.batch_size * setup.method.num_views, size, size, 3), jnp.dtype(dtype))

    def forward(params, batch_stats, x):
      return setup.model.apply({"params": params, "batch_stats": batch_stats}, x, train=False)

    try:
      fwd = _flops(jax.jit(forward).lower(state.params, state.batch_stats, crops).cost_analysis())
      model_flops = None if fwd is None else 3 * fwd
    except Exception:  # noqa: BLE001
      model_flops = None
  model_flops_s = time.perf_counter() - start

  start = time.perf_counter()
  for i in range(_WARMUP_STEPS.value):
    state, metrics = step_fn(state, batches[i % len(batches)])
  jax.block_until_ready((state, metrics) if _WARMUP_STEPS.value else state)
  warmup_s = time.perf_counter() - start
  logging.info("%s %s: %d warm-up steps in %.1f s; timing %d steps.", case, dtype, _WARMUP_STEPS.value, warmup_s,
               steps)
  start = time.perf_counter()
  for i in range(steps):
    state, metrics = step_fn(state, batches[i % len(batches)])
  jax.block_until_ready((state, metrics))
  seconds = time.perf_counter() - start
  step_s = seconds / steps

  stats = devices[0].memory_stats() or {}
  peak = stats.get("peak_bytes_in_use")
  limit = stats.get("bytes_limit")
  peaks = peak_flops(device_kind)
  n_dev = len(devices)
  achieved = None if flops is None else flops / step_s  # Per device: the compiled program is one device's.
  achieved_model = None if model_flops is None else model_flops / step_s / n_dev

  def mfu(value, peak_value):
    return None if value is None or peak_value is None else round(value / peak_value, 4)

  if dtype == "bfloat16":
    mfus = {"mfu_bf16": mfu(achieved, peaks["bf16"]), "model_mfu_bf16": mfu(achieved_model, peaks["bf16"])}
  else:
    mfus = {"mfu_tf32": mfu(achieved, peaks["tf32"]), "mfu_fp32": mfu(achieved, peaks["fp32"]),
            "model_mfu_tf32": mfu(achieved_model, peaks["tf32"]),
            "model_mfu_fp32": mfu(achieved_model, peaks["fp32"])}
  return {
      "case": case, "dtype": dtype, "method": config.method, "backbone": config.model.backbone,
      "stem": config.model.stem, "width_multiplier": config.model.width_multiplier,
      "batch_size": config.batch_size, "crop_size": config.augment.crop_size, "source_size": source_size,
      "crops_per_image": crops_per_image, "optimizer": config.optimizer.name,
      "online_probe": bool(setup.num_classes), "timed_steps": steps, "warmup_steps": _WARMUP_STEPS.value,
      "device_batches": len(batches),
      "jax_version": jax.__version__, "platform": devices[0].platform, "device_kind": device_kind,
      "device_count": n_dev, "default_matmul_precision": jax.config.jax_default_matmul_precision,
      "xla_flags": os.environ.get("XLA_FLAGS"),
      "setup_s": round(setup_s, 2), "lower_s": round(lower_s, 2), "compile_s": round(compile_s, 2),
      "model_flops_s": round(model_flops_s, 2), "warmup_s": round(warmup_s, 2), "step_s": round(step_s, 5),
      "images_per_s": round(config.batch_size * steps / seconds, 1),
      "crops_per_s": round(crops_per_image * config.batch_size * steps / seconds, 1),
      "flops_per_step": flops, "lowered_flops_per_step": lowered_flops, "model_flops_per_step": model_flops,
      "achieved_tflops_per_s": None if achieved is None else float(f"{achieved / 1e12:.4g}"),
      "model_tflops_per_s": None if achieved_model is None else float(f"{achieved_model / 1e12:.4g}"),
      "peak_flops": peaks, **mfus,
      "peak_device_gib": None if peak is None else round(peak / 2**30, 2),
      "device_limit_gib": None if limit is None else round(limit / 2**30, 2),
      "compiled_memory": memory,
      "peak_host_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
      "final_loss": float(metrics["loss"]),
  }


def reference_flops(case: str, dtype: str, batch_size: int | None = None) -> float | None:
  """FLOPs of one global train step, from the cost analysis of the step lowered on this backend.

  Meant to run on the CPU backend (the parent runs it in a JAX_PLATFORMS=cpu subprocess):
  XLA's CPU analysis counts every convolution, whereas on GPUs the compiled module's
  analysis misses those that run as cuDNN custom calls (on an H200 it reported about 2% of
  a ResNet-50 step's FLOPs). Nothing is materialised: state and batch are abstract.

  Args:
    case: one of CASES.
    dtype: 'float32' or 'bfloat16'.
    batch_size: overrides the case's batch (as after an out-of-memory retry).

  Returns:
    FLOPs (multiply-add = 2) of forward, backward, augmentation and optimizer for the global batch.
  """
  import jax

  from sslax import parallel
  from sslax.step import build_setup, create_train_state, make_train_step

  config, num_examples, num_classes = case_config(case, dtype)
  if batch_size is not None:
    config.batch_size = batch_size
  # XLA's own convolution gradients, as on the accelerator: the CPU default (GEMM gradients
  # with a scan over batch chunks) is the same arithmetic, but cost analysis counts a loop
  # body once.
  config.model.conv_impl = "xla"
  source = _source_size(case, config)
  mesh = parallel.make_mesh(jax.devices()[:1])
  setup = build_setup(config, num_examples, mesh=mesh, num_classes=num_classes)
  state = jax.eval_shape(lambda rng: create_train_state(setup, rng), jax.random.PRNGKey(0))
  sharding = parallel.batch_sharding(mesh)
  n = config.batch_size
  batch = {"image": jax.ShapeDtypeStruct((n, source, source, 3), np.uint8, sharding=sharding)}
  if setup.num_classes:
    batch["label"] = jax.ShapeDtypeStruct((n,), np.int32, sharding=sharding)
  if setup.method.needs_index:
    batch["index"] = jax.ShapeDtypeStruct((n,), np.int32, sharding=sharding)
  return _flops(make_train_step(setup).lower(state, batch).cost_analysis())


def _count_reference_flops(timeout_s: float = 600.0) -> dict[str, float | None]:
  """{'case/dtype': FLOPs} for --cases x --dtypes, counted in a CPU subprocess."""
  with tempfile.TemporaryDirectory() as tmp:
    out = os.path.join(tmp, "flops.json")
    argv = [sys.executable, str(Path(__file__).resolve()), "--_count_flops", f"--_result_file={out}",
            f"--cases={','.join(_CASES.value)}", f"--dtypes={','.join(_DTYPES.value)}"] + _forwarded_args()
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout_s, check=False)
    if proc.returncode or not os.path.exists(out):
      print(f"Counting reference FLOPs failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
      return {}
    with open(out) as f:
      return json.load(f)


def _forwarded_args() -> list[str]:
  args = []
  for flag in _FORWARDED:
    if flag.value is not None:
      value = ",".join(flag.value) if isinstance(flag.value, list) else flag.value
      args.append(f"--{flag.name}={value}" if not isinstance(value, bool) else f"--{'' if value else 'no'}{flag.name}")
  return args


def add_reference_mfu(result: dict, flops: float | None) -> dict:
  """Adds reference_flops_per_step and the MFU it gives (per device) to a case's result."""
  if flops is None or result.get("step_s") is None:
    return result
  peaks = result.get("peak_flops") or {}
  per_device = flops / result.get("device_count", 1) / result["step_s"]
  result["reference_flops_per_step"] = flops
  result["reference_tflops_per_s"] = float(f"{per_device / 1e12:.4g}")
  keys = ("bf16",) if result.get("dtype") == "bfloat16" else ("tf32", "fp32")
  for key in keys:
    if peaks.get(key):
      result[f"reference_mfu_{key}"] = round(per_device / peaks[key], 4)
  return result


def _run_in_subprocess(case: str, dtype: str, timeout_s: float, batch_size: int | None) -> dict:
  """Runs one case as `python accelerator.py --_one_case=...` and returns its result or error.

  Args:
    case: one of CASES.
    dtype: its dtype.
    timeout_s: the subprocess is killed after this many seconds.
    batch_size: overrides the case's batch (after an out-of-memory error), or None.

  Returns:
    The case's result, or {'case', 'dtype', 'error', ...} when it failed or timed out.
  """
  argv = [sys.executable, str(Path(__file__).resolve()), f"--_one_case={case}", f"--_dtype={dtype}"]
  argv += _forwarded_args()
  if batch_size is not None:
    argv.append(f"--{'batch_size' if case == 'resnet50_224' else 'cifar_batch_size'}={batch_size}")
  env = dict(os.environ)
  env.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", str(_MEM_FRACTION.value))
  with tempfile.TemporaryDirectory() as tmp:
    result_file, log_file = os.path.join(tmp, "result.json"), os.path.join(tmp, "log.txt")
    argv.append(f"--_result_file={result_file}")
    start = time.perf_counter()
    with open(log_file, "w") as log:
      try:
        proc = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, env=env, timeout=timeout_s, check=False)
        error = None if proc.returncode == 0 else f"exit status {proc.returncode}"
      except subprocess.TimeoutExpired:
        error = f"timed out after {timeout_s:.0f} s"
    wall_s = round(time.perf_counter() - start, 1)
    if os.path.exists(result_file):
      with open(result_file) as f:
        result = json.load(f)
    else:
      with open(log_file, errors="replace") as f:
        tail = f.read()[-3000:]
      result = {"case": case, "dtype": dtype, "error": error or "no result written", "oom": _is_oom(tail),
                "log_tail": tail}
    result["wall_s"] = wall_s
    if "error" in result:
      print(f"{case} {dtype}: {result['error'][:500]}", file=sys.stderr)
    return result


def _run_one_case_here(case: str, dtype: str) -> dict:
  """run_case, with any exception recorded as {'error': ...} (out of memory flagged)."""
  try:
    return run_case(case, dtype)
  except Exception as e:  # noqa: BLE001  (a failing case must not lose the others)
    message = f"{type(e).__name__}: {e}"
    return {"case": case, "dtype": dtype, "error": message[:3000], "oom": _is_oom(message)}


def markdown_table(results: list[dict]) -> str:
  """The results as a markdown table (one row per case and dtype)."""

  def fmt(value, spec=""):
    return "" if value is None else format(value, spec)

  header = ("| case | dtype | batch | crop | compile s | step ms | images/s | crops/s | step TFLOP | TFLOP/s "
            "| MFU bf16 / tf32 | MFU fp32 | model MFU | peak GiB | error |")
  lines = [header, "|" + "---|" * (header.count("|") - 1)]
  for r in results:
    flops = r.get("reference_flops_per_step", r.get("flops_per_step"))
    mfu = r.get("reference_mfu_bf16", r.get("reference_mfu_tf32", r.get("mfu_bf16", r.get("mfu_tf32"))))
    model_mfu = r.get("model_mfu_bf16", r.get("model_mfu_tf32"))
    row = [r.get("case"), r.get("dtype"), fmt(r.get("batch_size")), fmt(r.get("crop_size")),
           fmt(r.get("compile_s")), fmt(None if r.get("step_s") is None else 1000 * r["step_s"], ".1f"),
           fmt(r.get("images_per_s")), fmt(r.get("crops_per_s")), fmt(None if flops is None else flops / 1e12, ".4g"),
           fmt(r.get("reference_tflops_per_s", r.get("achieved_tflops_per_s"))), fmt(mfu, ".1%"),
           fmt(r.get("reference_mfu_fp32", r.get("mfu_fp32")), ".1%"),
           fmt(model_mfu, ".1%"), fmt(r.get("peak_device_gib")),
           (r.get("error") or "")[:80].replace("|", "/").replace("\n", " ")]
    lines.append("| " + " | ".join(str(x) for x in row) + " |")
  return "\n".join(lines)


def main(argv):
  del argv
  if _ONE_CASE.value:  # A case subprocess.
    result = _run_one_case_here(_ONE_CASE.value, _DTYPE.value)
    if _RESULT_FILE.value:
      with open(_RESULT_FILE.value, "w") as f:
        json.dump(result, f)
    print(json.dumps(result))
    return
  if _COUNT_FLOPS.value:  # The CPU subprocess of _count_reference_flops.
    counted = {f"{c}/{d}": reference_flops(c, d) for c in _CASES.value for d in _DTYPES.value}
    with open(_RESULT_FILE.value, "w") as f:
      json.dump(counted, f)
    return
  for case in _CASES.value:
    if case not in CASES:
      raise app.UsageError(f"Unknown case {case!r}; valid: {', '.join(CASES)}.")
  for dtype in _DTYPES.value:
    if dtype not in DTYPES:
      raise app.UsageError(f"Unknown dtype {dtype!r}; valid: {', '.join(DTYPES)}.")

  start = time.perf_counter()
  ref_flops = _count_reference_flops() if (_REFERENCE_FLOPS.value or _FLOPS_ONLY.value) else {}
  if _FLOPS_ONLY.value:
    print(json.dumps(ref_flops, indent=2))
    return
  if ref_flops:
    print(f"Reference FLOPs per step (CPU lowering) in {time.perf_counter() - start:.0f} s: {ref_flops}", flush=True)

  def time_left() -> float:
    """This case's time limit: --case_timeout_s, or less if --deadline_s comes first."""
    left = _CASE_TIMEOUT_S.value
    return min(left, _DEADLINE_S.value - (time.perf_counter() - start)) if _DEADLINE_S.value else left

  def can_start() -> bool:
    return not _DEADLINE_S.value or _DEADLINE_S.value - (time.perf_counter() - start) >= _MIN_CASE_S.value

  results = []
  for case in _CASES.value:
    for dtype in _DTYPES.value:
      if not _SUBPROCESS.value:
        result = _run_one_case_here(case, dtype)
        result["note"] = "in-process run: peak_device_gib is the peak of all the cases so far"
      elif not can_start():
        result = {"case": case, "dtype": dtype, "error": "skipped: less than --min_case_s left of --deadline_s"}
      else:
        result = _run_in_subprocess(case, dtype, time_left(), None)
        batch = case_config(case, dtype)[0].batch_size
        if result.get("oom") and _HALVE_BATCH_ON_OOM.value and batch >= 2 and can_start():
          first_error = result["error"]
          result = _run_in_subprocess(case, dtype, time_left(), batch // 2)
          result.update(retried_after_oom_at_batch=batch, first_error=first_error[:500])
      if not result.get("retried_after_oom_at_batch"):  # The counted batch is the case's own.
        add_reference_mfu(result, ref_flops.get(f"{case}/{dtype}"))
      results.append(result)
      print(json.dumps(result), flush=True)
      if _OUT.value:  # Written after every case, so a killed run keeps what it measured.
        with open(_OUT.value, "w") as f:
          json.dump(results, f, indent=2)
  print()
  print(markdown_table(results))
  print(f"\nTotal {time.perf_counter() - start:.0f} s.")


if __name__ == "__main__":
  app.run(main)
