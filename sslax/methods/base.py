"""The method contract: what every SSL method gives the trainer, and what the trainer gives it.

A method is one class in one file (`sslax/methods/<name>.py`), registered by one line in
`sslax/methods/__init__.py`. The trainer (sslax/step.py, sslax/train.py) knows methods only
through this surface:

- class attributes: `name` (registry key and config section, e.g. `config.moco_v3`),
  `config_fields` (that section's fields with defaults and valid ranges), `heads` (which of
  projector / predictor / prototypes / classifier / decoder the model has), `num_views` (global
  views per image), `supports_multicrop` (also takes `augment.num_local_crops` smaller views),
  `modality` ('image', or 'table': the views are a table's {'numeric', 'categorical'} rows
  and the batch carries marginal draws, sslax.data.tabular), `needs_caption` (the batch
  carries the dataset's caption tokens, 'caption'), `needs_index` (the loss reads
  `batch['index']`, dataset positions), `needs_label` (the loss reads `batch['label']`:
  captions made from class names) and `classifier_group`
  (how many consecutive inputs' projections one row of the classifier head reads);
- `init_state(params, rng)`: method state kept in TrainState.method_state (EMA target
  params, a key queue, a centre, a memory bank; `{}` when stateless);
- `loss(model, params, batch_stats, method_state, views, *, step, axis_name, batch)`: a
  `LossOutput`, computed per device inside `jax.shard_map` with explicit collectives over
  `axis_name` (sslax.parallel), so `loss` is the global-batch loss on every device;
- `post_update(state)`: a pure update after the optimizer step (EMA targets);
- `before_training(state, forward_pass)`: runs once before step 0 (memory fills);
- `final_metrics(model, variables, images, labels, ...)`: evaluation of its own when training
  ends (zero-shot accuracy and retrieval of image-text methods);
- `preview(model, variables, images, keys)`: image columns (corrupted inputs,
  reconstructions, colourisations) that the trainer writes to `<workdir>/preview.png` at
  the end of training.

Every hook except `loss` is a no-op by default.
"""
from __future__ import annotations

from typing import Any, Callable, ClassVar, Mapping, Sequence

import flax
import jax
import ml_collections

from sslax.config_utils import ConfigError, Field, check_section, section_defaults

HEADS = ("projector", "predictor", "prototypes", "classifier", "decoder", "text")
# The model config field that switches each optional head on.
_HEAD_FIELDS = {"predictor": ("model.predictor", "a head config, e.g. sslax.presets.mlp_head((4096,), 256)"),
                "prototypes": ("model.num_prototypes", "the number of prototypes K > 0"),
                "classifier": ("model.classifier", "a head config, e.g. sslax.presets.mlp_head((512,), 100)"),
                "decoder": ("model.decoder", "a decoder config, e.g. sslax.presets.conv_decoder(256)"),
                "text": ("model.text", "a text tower config, e.g. sslax.presets.text_tower(256, 4)")}


@flax.struct.dataclass
class LossOutput:
  """What `Method.loss` returns (a pytree, so it passes through `jax.value_and_grad(has_aux=True)`).

  Attributes:
    loss: scalar, the global-batch loss (identical on every device); its gradient is applied.
    batch_stats: BatchNorm statistics after this batch's forward passes ({} if BN-free).
    method_state: method state after this batch (queue, centre, memory); the input state
      unchanged for stateless methods.
    features: (n_local, D) backbone features of the first view, for the online linear probe.
    embeddings: (n, d) the vectors the collapse monitors watch (usually the projections).
    metrics: scalar method metrics to log (e.g. 'contrastive_top1').
  """

  loss: jax.Array
  batch_stats: Any
  method_state: Any
  features: jax.Array
  embeddings: jax.Array
  metrics: dict = flax.struct.field(default_factory=dict)


# forward_pass(fn, max_batches=None) runs fn(model, params, batch_stats, method_state, views, *,
# index, axis_name) -> method_state on every batch of one epoch of augmented training data (or
# its first max_batches; sharded over the mesh, no gradient) and returns the TrainState with the
# final method_state.
ForwardPass = Callable[[Callable[..., Any]], Any]


class Method:
  """Base class of every SSL method; subclasses set the class attributes and implement `loss`.

  Attributes:
    config: the run config; the method's own settings are `config.<name>`.
    total_steps: length of training (momentum and temperature schedules).
    steps_per_epoch: for settings given in epochs (frozen prototypes, warm-ups, queue start).
    num_examples: 1 + the largest dataset index of a training example (memory banks).
  """

  name: ClassVar[str] = ""
  modality: ClassVar[str] = "image"
  config_fields: ClassVar[Mapping[str, Field]] = {}
  heads: ClassVar[tuple[str, ...]] = ("projector",)
  num_views: ClassVar[int] = 2
  supports_multicrop: ClassVar[bool] = False
  needs_index: ClassVar[bool] = False
  needs_label: ClassVar[bool] = False
  needs_caption: ClassVar[bool] = False
  classifier_group: ClassVar[int] = 1

  def __init__(self, config: ml_collections.ConfigDict, *, total_steps: int = 1, steps_per_epoch: int = 1,
               num_examples: int = 0):
    self.validate_config(config)
    self.config = config
    self.settings = config[self.name] if self.config_fields else ml_collections.ConfigDict()
    self.total_steps = total_steps
    self.steps_per_epoch = steps_per_epoch
    self.num_examples = num_examples

  # --------------------------------------------------------------------------- config

  @classmethod
  def default_config(cls) -> ml_collections.ConfigDict:
    """The method's config section (`config.<name>`) with every field at its default."""
    return section_defaults(cls.config_fields)

  @classmethod
  def validate_config(cls, config: ml_collections.ConfigDict) -> None:
    """Checks `config.<name>` against `config_fields` and the model's heads against `heads`.

    Raises:
      ConfigError: naming the bad field and its valid range, or the head to add or remove.
    """
    if cls.config_fields:
      check_section(config, cls.name, cls.config_fields)
    from sslax.data.tabular import TABLE_SOURCES
    from sslax.models import TABULAR

    table_data, table_model = config.data.source in TABLE_SOURCES, config.model.backbone in TABULAR
    if (cls.modality == "table") != table_data:
      raise ConfigError(f"{cls.name} learns from {cls.modality}s, but config.data.source={config.data.source!r} "
                        f"{'is a table' if table_data else 'holds images'}; use "
                        f"{'a tabular method (scarf)' if table_data else 'data.source csv or sklearn'}.")
    if table_model != table_data:
      raise ConfigError(f"config.model.backbone={config.model.backbone!r} does not fit config.data.source="
                        f"{config.data.source!r}: tables need {TABULAR[0]!r}, images a ResNet or ViT.")
    model = config.model
    configured = {"projector": True, "predictor": bool(model.get("predictor")),
                  "prototypes": bool(model.get("num_prototypes")), "classifier": bool(model.get("classifier")),
                  "decoder": bool(model.get("decoder")), "text": bool(model.get("text"))}
    for head, (field, hint) in _HEAD_FIELDS.items():
      if head in cls.heads and not configured[head]:
        raise ConfigError(f"{cls.name} needs a {head} head: set config.{field} ({hint}).")
      if head not in cls.heads and configured[head]:
        raise ConfigError(f"{cls.name} has no {head} head, but config.{field} is set; remove it "
                          f"(--config.{field}={0 if head == 'prototypes' else 'None'}).")

  @classmethod
  def representation_tile_size(cls, config: ml_collections.ConfigDict) -> int:
    """Side of the tiles the backbone is trained on, at config.augment.crop_size; 0 when it
    sees whole views.

    Evaluation (kNN, linear probe) of a backbone trained on tiles represents an image by the
    average of its pooled features over a 3x3 grid of tiles of the same relative size
    (sslax.evaluate.features.grid_tile_size), as Kolesnikov et al. (2019) evaluate jigsaw
    and relative patch location: the whole image would be a scale the network never saw.
    """
    del config
    return 0

  # --------------------------------------------------------------------------- hooks

  def init_state(self, params: Any, rng: jax.Array) -> dict:
    """Initial method state (TrainState.method_state); `{}` for stateless methods."""
    del params, rng
    return {}

  def loss(self, model, params, batch_stats, method_state, views: Sequence[jax.Array], *, step: jax.Array,
           axis_name: str | None, batch: dict | None = None) -> LossOutput:
    """The method's loss on this device's views (inside shard_map over `axis_name`).

    Args:
      model: the SSLModel (heads as declared in `heads`).
      params: the online parameters being differentiated.
      batch_stats: BatchNorm statistics.
      method_state: TrainState.method_state.
      views: normalised views, `num_views` global ones first, then any local crops; each
        (n_local, H, W, 3).
      step: the step being taken (0-based), traced.
      axis_name: the mesh axis of the batch, or None on one device.
      batch: this device's rows of the raw batch ('image', 'label', 'index').

    Returns:
      LossOutput.
    """
    raise NotImplementedError

  def post_update(self, state):
    """A pure update of the TrainState after the optimizer step (EMA targets); identity by default."""
    return state

  def before_training(self, state, forward_pass: ForwardPass):
    """Runs once before step 0 of a fresh run (not on resume); identity by default.

    Args:
      state: the initial TrainState.
      forward_pass: see `ForwardPass`; call it to run a forward-only pass over one epoch.

    Returns:
      The TrainState to start training from.
    """
    del forward_pass
    return state

  def final_metrics(self, model, variables: dict, images, labels, *, mesh, data_cfg, batch_size: int,
                    captions=None) -> dict:
    """Method-specific evaluation when training ends (zero-shot accuracy of image-text
    methods); none by default. Called on every process (it may extract features over the mesh).

    Args:
      model: the SSLModel.
      variables: {'params', 'batch_stats'} of the trained model.
      images, labels: the kNN monitor's evaluation images (uint8) and labels.
      mesh: the training mesh.
      data_cfg: config.data (normalisation).
      batch_size: feature-extraction batch.
      captions: the evaluation images' caption tokens (N, C, L) when the dataset has captions.

    Returns:
      {metric name: float}, added to the run's summary and metrics.
    """
    del model, variables, images, labels, mesh, data_cfg, batch_size, captions
    return {}

  def preview(self, model, variables: dict, images: jax.Array, keys: jax.Array) -> list[jax.Array]:
    """Columns of `<workdir>/preview.png`, written when training ends; none by default.

    Args:
      model: the SSLModel.
      variables: {'params', 'batch_stats'} of the trained model (evaluation mode).
      images: (n, S, S, 3) normalised evaluation images (no augmentation).
      keys: (n, 2) per-example PRNG keys (for random corruptions).

    Returns:
      A list of (n, S, S, 3) images in the same normalised space (e.g. [corrupted inputs,
      reconstructions]); the trainer shows each row as original, then these columns.
    """
    del model, variables, images, keys
    return []
