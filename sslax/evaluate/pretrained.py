"""Pretrained backbones: load from a pretraining workdir, export alone, or initialise at random.

  from sslax.evaluate import load_pretrained
  backbone = load_pretrained("workdirs/simclr_cpu")
  feats = backbone.features(images_uint8)                   # numpy (N, D)
  out = backbone.module.apply(backbone.variables, x, train=False)   # any JAX program

`x` is a float image batch normalised with `backbone.config.data.mean/std`
(`backbone.preprocess` does that for uint8 images).
"""
from __future__ import annotations

import dataclasses
import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from sslax import parallel
from sslax.data.preprocessing import preprocess
from sslax.evaluate.features import extract_features, grid_average, grid_tile_size
from sslax.models import build_backbone

BACKBONE_CONFIG = "backbone_config.json"


class PretrainedError(FileNotFoundError):
  """The pretraining workdir (or its checkpoint) is missing or unusable."""


@dataclasses.dataclass
class Backbone:
  """A backbone and its variables, ready to compute features.

  Attributes:
    config: the pretraining config (data normalisation, model fields, method).
    module: the Flax backbone (local BatchNorm; use train=False for features).
    variables: {'params': ..., 'batch_stats': ...} of the backbone alone.
    step: the pretraining step of these weights (0 for a random initialisation).
    source: the workdir, export directory, or 'random-init'.
  """

  config: ml_collections.ConfigDict
  module: nn.Module
  variables: dict
  step: int
  source: str

  def preprocess(self, images: jax.Array, image_size: int | None = None) -> jax.Array:
    """uint8 (B, H, W, 3) -> normalised float (B, S, S, 3), resized to image_size if given."""
    return preprocess(images, self.config.data.mean, self.config.data.std, image_size=image_size)

  def apply(self, variables: dict, images: jax.Array, train: bool = False, image_size: int | None = None,
            mutable=False):
    """Features of uint8 images with the given variables (for fine-tuning as well as eval)."""
    return self.module.apply(variables, self.preprocess(images, image_size), train=train, mutable=mutable)

  def with_model_fields(self, **fields) -> "Backbone":
    """The same variables under a module rebuilt with config.model fields replaced.

    For fields that change no parameter, e.g. a ViT's `pool` (class token or mean of the patch
    tokens), so that one checkpoint can be read another way.

    Args:
      **fields: config.model fields and their new values.

    Returns:
      A new Backbone; this one is unchanged.
    """
    config = self.config.copy_and_resolve_references()
    with config.unlocked():
      config.model.update(fields)
    module = build_backbone(config.model, normalization=(config.data.mean, config.data.std))
    return dataclasses.replace(self, config=config, module=module)

  def features(self, images: np.ndarray, batch_size: int = 500, image_size: int | None = None,
               mesh: jax.sharding.Mesh | None = None, representation: str = "auto") -> np.ndarray:
    """Evaluation-mode features of every image, batches sharded over the mesh's devices.

    Args:
      images: uint8 (N, H, W, 3), the same on every process.
      batch_size: global batch size.
      image_size: resize to this size first (None: as stored).
      mesh: device mesh (default: all devices).
      representation: 'image', 'grid' (the mean over 3x3 grid tiles), 'grid_concat' (their
        concatenation) or 'auto' (the grid for backbones trained on tiles); see
        sslax.evaluate.features.grid_tile_size.

    Returns:
      float32 (N, D).
    """
    mesh = parallel.make_mesh() if mesh is None else mesh
    tile = grid_tile_size(self.config, image_size or images.shape[1], representation)
    fn = jax.jit(lambda v, x: grid_average(lambda t: self.module.apply(v, t, train=False),
                                           self.preprocess(x, image_size), tile,
                                           concat=representation == "grid_concat"),
                 out_shardings=parallel.batch_sharding(mesh))
    variables = parallel.replicate(self.variables, mesh)
    return extract_features(fn, variables, images, batch_size, mesh)


def _read_config(path: str) -> ml_collections.ConfigDict:
  with open(path) as f:
    return ml_collections.ConfigDict(json.load(f))


def _backbone_variables(variables: dict, scope: str | None = "backbone") -> dict:
  """The params and BatchNorm statistics under `scope` (None: the whole tree), in the one layout
  every protocol reads: BN-free backbones (ViT) get empty statistics."""
  params, stats = variables["params"], variables.get("batch_stats", {})
  if scope is None:
    return {"params": params, "batch_stats": stats}
  return {"params": params[scope], "batch_stats": stats.get(scope, {})}


def load_pretrained(workdir: str, step: int | None = None) -> Backbone:
  """The backbone of a pretraining workdir (any method), or of an exported backbone directory.

  Args:
    workdir: a directory written by `sslax.main` (config.json + checkpoints/) or by
      `export_backbone`.
    step: checkpoint step (default: latest).

  Returns:
    Backbone with its variables on the host.

  Raises:
    PretrainedError: the directory, its config or its checkpoint is missing.
  """
  from sslax.checkpoint import Checkpointer

  if not os.path.isdir(workdir):
    raise PretrainedError(f"Pretraining workdir {workdir!r} does not exist. Pass the --workdir of a "
                          f"pretraining run (python -m sslax.main --config=configs/simclr.py --workdir=DIR).")
  if os.path.exists(os.path.join(workdir, BACKBONE_CONFIG)):
    return _load_exported(workdir)
  config_path = os.path.join(workdir, "config.json")
  if not os.path.exists(config_path):
    raise PretrainedError(f"{workdir!r} holds no config.json, so it is not an sslax pretraining workdir.")
  config = _read_config(config_path)
  with Checkpointer(workdir, async_save=False) as checkpointer:
    if checkpointer.latest_step() is None:
      raise PretrainedError(f"{workdir!r} holds no checkpoint under {checkpointer.directory}: pretraining "
                            f"has not saved one yet. Train longer (checkpoint.every_steps) and retry.")
    step = checkpointer.latest_step() if step is None else step
    # The restore target comes from the checkpoint's own metadata (so any method, probe or
    # optimizer state restores), replicated on one local device: a checkpoint written on
    # any number of devices or hosts restores in this process.
    replicated = parallel.replicated(parallel.make_mesh(jax.local_devices()[:1]))
    metadata = checkpointer.manager.item_metadata(step)
    metadata = getattr(metadata, "tree", metadata)
    abstract = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=replicated), metadata)
    state = checkpointer.restore(abstract, step)
  variables = jax.device_get(_backbone_variables(state))
  module = build_backbone(config.model, normalization=(config.data.mean, config.data.std))
  return Backbone(config=config, module=module, variables=variables, step=int(state["step"]),
                  source=os.path.abspath(workdir))


def random_backbone(config: ml_collections.ConfigDict, seed: int = 0) -> Backbone:
  """The same backbone, randomly initialised (the baseline every report shows)."""
  module = build_backbone(config.model, normalization=(config.data.mean, config.data.std))
  size = config.augment.crop_size
  variables = module.init(jax.random.PRNGKey(seed), jnp.zeros((2, size, size, 3)), train=False)
  return Backbone(config=config, module=module, variables=jax.device_get(_backbone_variables(variables, None)), step=0,
                  source="random-init")


def export_backbone(workdir: str, out_dir: str, step: int | None = None) -> str:
  """Writes the backbone alone (variables + config) to `out_dir`, loadable by load_pretrained.

  Args:
    workdir: a pretraining workdir.
    out_dir: new directory for the standalone checkpoint.
    step: checkpoint step (default: latest).

  Returns:
    out_dir.
  """
  import orbax.checkpoint as ocp

  backbone = load_pretrained(workdir, step)
  out_dir = os.path.abspath(out_dir)
  if os.path.exists(os.path.join(out_dir, "variables")):
    raise FileExistsError(f"{out_dir} already holds an exported backbone; choose another directory.")
  os.makedirs(out_dir, exist_ok=True)
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(os.path.join(out_dir, "variables"), backbone.variables)
  with open(os.path.join(out_dir, BACKBONE_CONFIG), "w") as f:
    json.dump({"config": json.loads(backbone.config.to_json_best_effort()), "step": backbone.step,
               "source": backbone.source}, f, indent=2)
  return out_dir


def _load_exported(out_dir: str) -> Backbone:
  import orbax.checkpoint as ocp

  with open(os.path.join(out_dir, BACKBONE_CONFIG)) as f:
    meta = json.load(f)
  config = ml_collections.ConfigDict(meta["config"])
  template = random_backbone(config)
  with ocp.StandardCheckpointer() as ckptr:
    variables = ckptr.restore(os.path.join(os.path.abspath(out_dir), "variables"), template.variables)
  return Backbone(config=config, module=template.module, variables=jax.device_get(variables), step=meta["step"],
                  source=os.path.abspath(out_dir))

