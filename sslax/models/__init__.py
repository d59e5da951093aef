"""Backbones and heads, chosen by name from the config."""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from sslax.models.conv import CONV_IMPLS, conv_for
from sslax.models.norm import BN_IMPLS, batch_norm_for
from sslax.models.heads import ConvDecoder, MLPHead, Prototypes, SplitDecoder
from sslax.models.inputs import LightnessInput, SplitBrainBackbone
from sslax.models.tabular import TabularMLP
from sslax.models.resnet import RESNET_DEPTHS, BasicBlock, BottleneckBlock, ResNet
from sslax.models.text import build_text_tower

RESNETS = ("resnet18", "resnet34", "resnet50")
VITS = ("vit_test", "vit_tiny", "vit_small", "vit_base")
TABULAR = ("tabular_mlp",)  # Tables: numeric + one-hot categorical columns (sslax.data.tabular).
BACKBONES = RESNETS + VITS + TABULAR
# What the backbone sees of the (normalised RGB) images: all of them, the L channel of CIE
# Lab (colourisation), or L and ab through two half networks (split-brain autoencoder).
INPUTS = ("rgb", "lightness", "split_brain")


def build_backbone(model_cfg, bn_axis_name: str | None = None, normalization=None) -> nn.Module:
  """Builds the backbone named by `model_cfg.backbone`, on the channels `model_cfg.input` names.

  Args:
    model_cfg: config with `backbone`, `width_multiplier`, `stem` (ResNets), `patch_size`
      and optional `pool` (ViTs), optional `dtype` and optional `input` (one of INPUTS, default 'rgb').
    bn_axis_name: mesh axis for global BatchNorm statistics.
    normalization: (mean, std) of the images (config.data), needed to convert them to Lab
      when `input` is not 'rgb'.

  Returns:
    A Flax module mapping (B, H, W, 3) normalised RGB images to (B, D) features.
  """
  kind = model_cfg.get("input", "rgb")
  if kind == "rgb":
    return _plain_backbone(model_cfg, bn_axis_name)
  if kind not in INPUTS:
    raise ValueError(f"Unknown model input {kind!r} (config.model.input); valid choices: {', '.join(INPUTS)}.")
  if normalization is None:
    raise ValueError(f"config.model.input={kind!r} converts the images to Lab: pass normalization=(mean, std).")
  mean, std = (tuple(float(v) for v in t) for t in normalization)
  if kind == "lightness":
    return LightnessInput(_plain_backbone(model_cfg, bn_axis_name), mean=mean, std=std)
  # Split-brain: each half network has half the channels of the configured ResNet (the paper
  # splits AlexNet's channels in two), so the concatenated features have the usual width.
  # ViTs keep their size (their width is not a multiplier).
  half = model_cfg
  if model_cfg.backbone in RESNETS:
    half = model_cfg.copy_and_resolve_references()
    with half.unlocked():
      half.width_multiplier = model_cfg.width_multiplier / 2
  return SplitBrainBackbone(_plain_backbone(half, bn_axis_name), _plain_backbone(half, bn_axis_name), mean=mean, std=std)


def _plain_backbone(model_cfg, bn_axis_name):
  name = model_cfg.backbone
  if name not in BACKBONES:
    raise ValueError(f"Unknown backbone {name!r}; valid choices: {', '.join(BACKBONES)}.")
  if name in TABULAR:
    return TabularMLP(hidden_dims=tuple(model_cfg.mlp_dims), max_categories=model_cfg.max_categories,
                      dtype=jnp.dtype(model_cfg.get("dtype", "float32")))
  if name in VITS:
    from sslax.models.vit import build_vit

    # Stochastic depth is not wired into the train step (it needs a 'dropout' rng), so it stays off.
    return build_vit(name, patch_size=model_cfg.get("patch_size", 4), dtype=jnp.dtype(model_cfg.get("dtype", "float32")),
                     pool=model_cfg.get("pool", "cls"))
  stages, block = RESNET_DEPTHS[int(name[len("resnet"):])]
  return ResNet(stage_sizes=stages, block_cls=block, width_multiplier=model_cfg.width_multiplier,
                stem=model_cfg.stem, bn_axis_name=bn_axis_name,
                dtype=jnp.dtype(model_cfg.get("dtype", "float32")),
                conv_general_dilated=conv_for(model_cfg.get("conv_impl", "auto"), model_cfg.get("dtype", "float32")),
                batch_norm=batch_norm_for(model_cfg.get("bn_impl", "auto")))


class SSLModel(nn.Module):
  """Backbone + the heads a method uses: projector, predictor, prototypes, grouped classifier, decoder.

  Params live under 'backbone', 'projector', 'predictor', 'prototypes', 'classifier' and
  'decoder', so the backbone alone can be exported and a target network can hold just the
  parts it needs.

  Attributes:
    backbone: images -> (B, D) features.
    projector: features -> (B, d) projection, or None (a decoder-only method).
    predictor: projection -> (B, d) prediction (BYOL, SimSiam, MoCo v3), or None.
    prototypes: L2-normalised projection -> (B, K) scores (SwAV, DINO, DeepCluster v2), or None.
    classifier: the concatenated projections of `classifier_group` consecutive inputs ->
      (B / classifier_group, C) logits (jigsaw over 9 tiles, relative patch location over a
      pair), or None. CPC's context network takes this slot (sslax.models.context): its
      'logits' are the (B / classifier_group, K, G, G, d) predictions over each image's grid.
    classifier_group: inputs per classifier row.
    decoder: features -> (B, H, W, 3) reconstruction of the input's size (autoencoders), or None.
      MAE's decoder (sslax.models.vit.MaskedPatchDecoder) also takes the encoder's tokens of
      the visible patches; the method calls it through its own apply function.
    text: caption tokens -> text projection in the projector's space, with the loss's learned
      logit scale and bias (image-text methods: CLIP, SigLIP), or None.
  """

  backbone: nn.Module
  projector: nn.Module | None
  predictor: nn.Module | None = None
  prototypes: nn.Module | None = None
  classifier: nn.Module | None = None
  classifier_group: int = 1
  decoder: nn.Module | None = None
  text: nn.Module | None = None

  @property
  def init_batch_size(self) -> int:
    """A batch size that initialises every head (the classifier reads groups of inputs)."""
    return 2 * self.classifier_group

  def __call__(self, x, train: bool = True, predict: bool = True, pretext: bool = False,
               tokens=None, classifier_rows=None) -> dict[str, Any]:
    """Args:
      x: (B, H, W, 3) normalised images, or a table's {'numeric', 'categorical'} rows.
      train: batch statistics in BatchNorm when True.
      predict: run the predictor; False for a target network, which has no predictor params.
      pretext: run the pretext-task heads, the grouped classifier (B must be a multiple of
        classifier_group) and the decoder; evaluation, which reads features, leaves them off.
      tokens: int (B_t, L) caption tokens for the text tower (image-text methods).
      classifier_rows: int (R, classifier_group) indices into the batch: the inputs whose
        projections each classifier row concatenates, so that one input can feed several
        rows (relative patch location's centre patch with each of its neighbours); None:
        consecutive groups of classifier_group inputs.

    Returns:
      {'features'} plus 'projection', 'prediction', 'scores', 'logits' and/or
      'reconstruction' when those heads exist (and are asked for), and the text tower's
      'text_projection', 'logit_scale' and 'logit_bias' when it exists and tokens are given.
    """
    features = self.backbone(x, train=train)
    out = {"features": features}
    if self.text is not None and (tokens is not None or self.is_initializing()):
      if tokens is None:  # Initialisation creates the text tower's parameters too.
        tokens = jnp.zeros((1, self.text.transformer.max_len), jnp.int32).at[:, 1].set(2)
      out.update(self.text(tokens, train=train))
    if self.decoder is not None and pretext:
      out["reconstruction"] = self.decoder(features, x.shape[1:3], train=train)
    if self.projector is None:
      return out
    out["projection"] = self.projector(features, train=train)
    if self.predictor is not None and predict:
      out["prediction"] = self.predictor(out["projection"], train=train)
    if self.prototypes is not None:
      out["scores"] = self.prototypes(out["projection"])
    if self.classifier is not None and pretext:
      z = out["projection"]
      grouped = z.reshape(z.shape[0] // self.classifier_group, -1) if classifier_rows is None else (
          z[classifier_rows].reshape(classifier_rows.shape[0], -1))
      out["logits"] = self.classifier(grouped, train=train)
    return out


def _mlp(head_cfg, bn_axis_name):
  return MLPHead(hidden_dims=tuple(head_cfg.hidden_dims), output_dim=head_cfg.output_dim, use_bn=head_cfg.use_bn,
                 last_bn=head_cfg.last_bn, bn_axis_name=bn_axis_name, activation=head_cfg.get("activation", "relu"),
                 output_init_scale=head_cfg.get("output_init_scale", 1.0))


def build_model(model_cfg, heads: Sequence[str] = ("projector",), bn_axis_name: str | None = None,
                classifier_group: int = 1, normalization=None) -> SSLModel:
  """Backbone and the heads a method declares (sslax.methods.base.Method.heads).

  Args:
    model_cfg: `backbone` settings, `projector` (a head config), `predictor` (a head config,
      read when 'predictor' is in heads), `num_prototypes` (read when 'prototypes' is),
      `classifier` (a head config, read when 'classifier' is) and `decoder` (width and
      num_upsamples, or with kind='vit' MAE's Transformer decoder: width, depth, num_heads;
      read when 'decoder' is).
    heads: subset of ('projector', 'predictor', 'prototypes', 'classifier', 'decoder', 'text');
      the method validates that the config has what it declares.
    bn_axis_name: mesh axis for global BatchNorm statistics.
    classifier_group: inputs whose projections one classifier row concatenates.
    normalization: (mean, std) of the images, for backbones on Lab channels (build_backbone).

  Returns:
    SSLModel.
  """
  return SSLModel(
      backbone=build_backbone(model_cfg, bn_axis_name, normalization),
      projector=_mlp(model_cfg.projector, bn_axis_name) if "projector" in heads else None,
      predictor=_mlp(model_cfg.predictor, bn_axis_name) if "predictor" in heads else None,
      prototypes=Prototypes(model_cfg.num_prototypes) if "prototypes" in heads else None,
      classifier=_classifier(model_cfg.classifier, bn_axis_name, classifier_group) if "classifier" in heads else None,
      classifier_group=classifier_group,
      decoder=_decoder(model_cfg.decoder, bn_axis_name, model_cfg) if "decoder" in heads else None,
      text=build_text_tower(model_cfg.text, model_cfg.projector.output_dim) if "text" in heads else None,
  )


def _classifier(cfg, bn_axis_name, classifier_group):
  if cfg.get("kind", "mlp") == "cpc_context":  # CPC: the context network over each image's grid of patches.
    from sslax.models.context import build_context_head

    return build_context_head(cfg, classifier_group)
  return _mlp(cfg, bn_axis_name)


def _decoder(cfg, bn_axis_name, model_cfg):
  out = cfg.get("out_channels", 3)
  if cfg.get("kind", "conv") == "vit":  # MAE: a Transformer over encoder tokens and mask tokens.
    from sslax.models.vit import MaskedPatchDecoder

    return MaskedPatchDecoder(patch_size=model_cfg.get("patch_size", 4), width=cfg.width, depth=cfg.depth,
                              num_heads=cfg.num_heads, mlp_ratio=cfg.get("mlp_ratio", 4.0), out_channels=out,
                              dtype=jnp.dtype(model_cfg.get("dtype", "float32")))
  if isinstance(out, (tuple, list)):  # One decoder per equal slice of the features (split-brain).
    return SplitDecoder(width=cfg.width, num_upsamples=cfg.num_upsamples, out_channels=tuple(out),
                        bn_axis_name=bn_axis_name)
  return ConvDecoder(width=cfg.width, num_upsamples=cfg.num_upsamples, out_channels=out, bn_axis_name=bn_axis_name)

__all__ = ["BACKBONES", "BN_IMPLS", "CONV_IMPLS", "INPUTS", "RESNETS", "VITS", "BasicBlock", "BottleneckBlock", "ConvDecoder", "MLPHead",
           "Prototypes", "ResNet", "SSLModel", "SplitDecoder", "TABULAR", "TabularMLP", "build_backbone", "build_model"]
