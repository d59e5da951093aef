"""Image-text contrastive pretraining: CLIP (Radford et al. 2021) and SigLIP (Zhai et al. 2023).

The image tower is the run's backbone and projector; the text tower (config.model.text) is a
causal Transformer over byte tokens with a linear projection into the same space, and holds
the loss's learned logit scale (and SigLIP's bias). `clip.loss` chooses the loss:

* 'clip': symmetric InfoNCE with image and text embeddings all-gathered across devices;
* 'siglip': the pairwise sigmoid loss, computed block by block as each device passes its
  text embeddings around the ring (ppermute), so no device holds the N x N logits.

Captions (`clip.captions`):

* 'dataset': the dataset's own captions (image folders with a .txt per image or a CSV of
  (path, caption) rows, or a TFDS text feature such as coco_captions' 'captions/text'; see
  config.data.captions / data.caption_feature). They come with the batch as byte tokens, up to
  data.max_captions per image, and one of them is drawn per example and step on the device.
* 'templates': captions made from class names: each example's caption is one of
  `clip.templates` ("a photo of a {}.", ...) filled with its class name, the template drawn per
  example from (seed, step, global index) on the device. On CIFAR-10 this is a mechanism check
  of the two towers, the losses and zero-shot evaluation, not a claim about language
  understanding.

At the end of training (on the kNN monitor's evaluation split): zero-shot accuracy when the
split is labelled and `clip.class_names` names its classes, and retrieval recall of each image
with its caption.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from sslax import losses
from sslax.config_utils import ConfigError, Field
from sslax.evaluate.zero_shot import TEMPLATES, prompts
from sslax.methods.base import LossOutput, Method
from sslax.methods.common import method_keys, multi_view_forward
from sslax.models.text import tokenize

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
_TEMPLATE_STREAM = 0xC11F


class CLIP(Method):
  """One augmented view per image, contrasted with its templated caption (see the module docstring)."""

  name = "clip"
  heads = ("projector", "text")
  num_views = 1
  needs_label = True
  config_fields = {
      "loss": Field("clip", "image-text loss", choices=("clip", "siglip")),
      "captions": Field("templates", "captions from class names in templates, or the dataset's",
                        choices=("templates", "dataset")),
      "max_logit_scale": Field(100.0, "CLIP clips exp(logit_scale) at this value", gt=0),
      "class_names": Field(CIFAR10_CLASSES, "class names that fill the caption templates (label order)", text=True),
      "templates": Field(TEMPLATES, "caption templates with one '{}' for the class name", text=True),
  }

  @classmethod
  def validate_config(cls, config) -> None:
    super().validate_config(config)
    if config.clip.captions == "dataset" and not (config.data.get("captions") or config.data.get("caption_feature")):
      raise ConfigError("config.clip.captions='dataset' reads the dataset's captions: set --config.data.captions "
                        "(folders: 'txt' or a CSV file) or --config.data.caption_feature (TFDS, e.g. captions/text).")
    bad = [t for t in config.clip.templates if t.count("{}") != 1]
    if bad:
      raise ConfigError(f"config.clip.templates: every template needs exactly one '{{}}'; {bad[0]!r} does not.")

  def __init__(self, config, **kwargs):
    super().__init__(config, **kwargs)
    self.needs_label = self.settings.captions == "templates"
    self.needs_caption = self.settings.captions == "dataset"
    names, templates = tuple(self.settings.class_names), tuple(self.settings.templates)
    tokens = tokenize(prompts(names, templates), max_len=config.model.text.max_len)
    # (classes, templates, max_len): caption t of class c.
    self.caption_tokens = tokens.reshape(len(names), len(templates), -1)

  def captions(self, batch: dict, step: jax.Array, axis_name: str | None) -> jax.Array:
    """Caption tokens of each example: one of its dataset captions, or a template filled with
    its class name, drawn from (seed, step, global index)."""
    if self.needs_caption:
      options = batch["caption"]  # (n, C, L): the image's captions.
      keys = method_keys(self.config, step, options.shape[0], axis_name, _TEMPLATE_STREAM)
      pick = jax.vmap(lambda k: jax.random.randint(k, (), 0, options.shape[1]))(keys)
      return jnp.take_along_axis(options, pick[:, None, None], axis=1)[:, 0]
    labels = batch["label"]
    keys = method_keys(self.config, step, labels.shape[0], axis_name, _TEMPLATE_STREAM)
    num_templates = self.caption_tokens.shape[1]
    template = jax.vmap(lambda k: jax.random.randint(k, (), 0, num_templates))(keys)
    table = jnp.asarray(self.caption_tokens)
    return table[jnp.clip(labels, 0, table.shape[0] - 1), template]

  def loss(self, model, params, batch_stats, method_state, views, *, step, axis_name, batch=None):
    tokens = self.captions(batch, step, axis_name)
    (out,), new_stats = multi_view_forward(model, params, batch_stats, views[:1], predict=False)
    text = model.apply({"params": params}, tokens, method=lambda m, t: m.text(t))
    if self.settings.loss == "clip":
      loss, metrics = losses.clip_loss(out["projection"], text["text_projection"], logit_scale=text["logit_scale"],
                                       max_scale=float(self.settings.max_logit_scale), axis_name=axis_name)
    else:
      loss, metrics = losses.siglip_loss(out["projection"], text["text_projection"],
                                         logit_scale=text["logit_scale"], logit_bias=text["logit_bias"],
                                         axis_name=axis_name)
    return LossOutput(loss=loss, batch_stats=new_stats, method_state=method_state, features=out["features"],
                      embeddings=out["projection"], metrics=metrics)

  def text_embeddings(self, model, variables: dict, tokens: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Text-tower projections of (n, max_len) tokens, on the host's first device."""
    fn = jax.jit(lambda v, t: model.apply(v, t, method=lambda m, x: m.text(x, train=False))["text_projection"])
    return np.concatenate([np.asarray(fn({"params": variables["params"]}, tokens[i:i + batch_size]))
                           for i in range(0, len(tokens), batch_size)])

  def final_metrics(self, model, variables, images, labels, *, mesh, data_cfg, batch_size, captions=None):
    """Zero-shot top-1/top-5 on the evaluation images (class prompts ensembled over the
    templates), and image<->text retrieval recall@1/5 of each image with its caption (template
    i mod T) as in CLIP's evaluation, where any caption (image) of the query's class counts as
    a correct partner."""
    from sslax.evaluate.features import extract_features, make_feature_fn
    from sslax.evaluate.zero_shot import retrieval_recall, zero_shot_accuracy, zero_shot_weights

    classes, templates, _ = self.caption_tokens.shape
    image_fn = make_feature_fn(model, data_cfg, mesh=mesh, dtype=self.config.model.dtype,
                               image_size=self.config.knn.get("image_size"), output="projection")
    image_emb = extract_features(image_fn, variables, images, batch_size, mesh)
    if self.needs_caption:
      out = {}
      if captions is not None:  # Each image with its first caption, exact pairs.
        out.update(retrieval_recall(image_emb, self.text_embeddings(model, variables, np.asarray(captions)[:, 0]),
                                    ks=(1, 5)))
      labels = np.asarray(labels)
      if (labels >= 0).any() and labels.max() < classes:
        prompt_emb = self.text_embeddings(model, variables, self.caption_tokens.reshape(classes * templates, -1))
        acc = zero_shot_accuracy(image_emb[labels >= 0], labels[labels >= 0],
                                 zero_shot_weights(prompt_emb.reshape(classes, templates, -1)), ks=(1, 5))
        out.update(zero_shot_top1=acc[1], zero_shot_top5=acc[5])
      return out
    prompt_emb = self.text_embeddings(model, variables, self.caption_tokens.reshape(classes * templates, -1))
    weights = zero_shot_weights(prompt_emb.reshape(classes, templates, -1))
    acc = zero_shot_accuracy(image_emb, labels, weights, ks=(1, 5))
    labels = np.clip(np.asarray(labels), 0, classes - 1)
    captions = self.caption_tokens[labels, np.arange(len(labels)) % templates]
    # Captions made from class names describe their class: a retrieved item of the query's
    # class is a correct one (exact-pair recall would be chance among identical captions).
    recall = retrieval_recall(image_emb, self.text_embeddings(model, variables, captions), ks=(1, 5), match=labels)
    return {"zero_shot_top1": acc[1], "zero_shot_top5": acc[5], **recall}
