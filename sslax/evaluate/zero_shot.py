"""Zero-shot classification and cross-modal retrieval for image-text towers (CLIP, SigLIP).

Zero-shot classification follows CLIP (Radford et al. 2021, section 3.1.4): every class name
is put into several prompt templates, the text tower embeds each prompt, and a class's
weight is the normalised mean of its normalised prompt embeddings (prompt ensembling); an
image is assigned the class whose weight has the highest cosine with its embedding.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

# A subset of CLIP's 80 ImageNet templates (CLIP repository, notebooks/Prompt_Engineering_for_ImageNet.ipynb),
# also the caption templates of the templated-CIFAR-10 mechanism check.
TEMPLATES = (
    "a photo of a {}.",
    "a blurry photo of a {}.",
    "a photo of the large {}.",
    "a photo of the small {}.",
    "a low resolution photo of a {}.",
    "a cropped photo of the {}.",
    "a close-up photo of a {}.",
    "a bright photo of a {}.",
    "a dark photo of the {}.",
    "a good photo of the {}.",
    "a pixelated photo of the {}.",
    "art of the {}.",
)


def _normalize(x: np.ndarray, axis: int = -1) -> np.ndarray:
  return x / np.maximum(np.linalg.norm(x, axis=axis, keepdims=True), 1e-12)


def prompts(class_names: Sequence[str], templates: Sequence[str] = TEMPLATES) -> list[str]:
  """Every class name in every template, class-major: prompt c * T + t."""
  return [t.format(name) for name in class_names for t in templates]


def zero_shot_weights(prompt_embeddings: np.ndarray) -> np.ndarray:
  """Class weights from prompt embeddings (prompt ensembling).

  Args:
    prompt_embeddings: (C, T, d) text embeddings of T templates for each of C classes.

  Returns:
    float32 (C, d): each class's mean of L2-normalised prompt embeddings, L2-normalised.
  """
  return _normalize(_normalize(np.asarray(prompt_embeddings, np.float32)).mean(axis=1)).astype(np.float32)


def zero_shot_accuracy(image_embeddings: np.ndarray, labels: np.ndarray, weights: np.ndarray,
                       ks: Sequence[int] = (1, 5)) -> dict[int, float]:
  """Top-k accuracy of classifying images by cosine with the class weights.

  Args:
    image_embeddings: (N, d) image-tower embeddings.
    labels: int (N,) true classes.
    weights: (C, d) from zero_shot_weights.
    ks: which top-k accuracies.

  Returns:
    {k: accuracy}.
  """
  scores = _normalize(np.asarray(image_embeddings, np.float32)) @ np.asarray(weights, np.float32).T
  ranked = np.argsort(-scores, axis=1)
  labels = np.asarray(labels)
  return {k: float(np.mean(np.any(ranked[:, :min(k, scores.shape[1])] == labels[:, None], axis=1))) for k in ks}


def retrieval_recall(image_embeddings: np.ndarray, text_embeddings: np.ndarray,
                     ks: Sequence[int] = (1, 5), match: np.ndarray | None = None) -> dict[str, float]:
  """Recall@k of image->text and text->image retrieval over paired embeddings (row i with row i).

  Args:
    image_embeddings, text_embeddings: (N, d) embeddings of N held-out pairs.
    ks: cut-offs.
    match: optional (N,) ids; a candidate is a correct partner of a query when their ids are
      equal (captions made from class names: every caption of the class describes the image
      equally well, so `match` is the class). None: only row i's partner.

  Returns:
    {'image_to_text_r@k': ..., 'text_to_image_r@k': ...} for every k.
  """
  sims = _normalize(np.asarray(image_embeddings, np.float32)) @ _normalize(np.asarray(text_embeddings, np.float32)).T
  out = {}
  for name, s in (("image_to_text", sims), ("text_to_image", sims.T)):
    if match is None:
      best = np.diag(s)
    else:  # The best-scoring correct partner.
      ids = np.asarray(match)
      best = np.where(ids[:, None] == ids[None, :], s, -np.inf).max(axis=1)
    # The rank of the (best) true partner: how many candidates score strictly higher.
    rank = np.sum(s > best[:, None], axis=1)
    for k in ks:
      out[f"{name}_r@{k}"] = float(np.mean(rank < k))
  return out
