"""Plots of a learned representation: a 2-D t-SNE map and a nearest-neighbour retrieval grid."""
from __future__ import annotations

import numpy as np

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def _pyplot():
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  return plt


def tsne_plot(features: np.ndarray, labels: np.ndarray, path: str, *, num_points: int = 2000, seed: int = 0,
              class_names=CIFAR10_CLASSES, title: str = "t-SNE of test features") -> str:
  """2-D t-SNE of (a random subset of) L2-normalised features, coloured by class.

  Args:
    features: float (N, D).
    labels: int (N,).
    path: PNG to write.
    num_points: points shown (t-SNE is quadratic-ish; 2000 takes ~10 s on 2 cores).
    seed: subset and t-SNE seed.
    class_names: legend names by label (numbers are used beyond its length).
    title: plot title.

  Returns:
    path.
  """
  from sklearn.manifold import TSNE

  rng = np.random.default_rng(seed)
  idx = rng.permutation(len(features))[:num_points]
  x = features[idx] / (np.linalg.norm(features[idx], axis=1, keepdims=True) + 1e-8)
  xy = TSNE(n_components=2, init="pca", perplexity=30, random_state=seed, metric="cosine").fit_transform(x)
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(7, 6))
  y = labels[idx]
  cmap = plt.get_cmap("tab10" if y.max() < 10 else "tab20")
  for c in np.unique(y):
    name = class_names[c] if c < len(class_names) else str(c)
    ax.scatter(xy[y == c, 0], xy[y == c, 1], s=4, color=cmap(int(c) % cmap.N), label=name)
  ax.legend(markerscale=3, fontsize=7, loc="best")
  ax.set(title=title, xticks=[], yticks=[])
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def retrieval_grid(train_features: np.ndarray, train_images: np.ndarray, test_features: np.ndarray,
                   test_images: np.ndarray, path: str, *, num_queries: int = 8, k: int = 8, seed: int = 0) -> str:
  """Rows of [query test image | its k nearest training images by cosine similarity].

  Args:
    train_features, train_images: the memory bank and its uint8 images.
    test_features, test_images: queries are drawn from these.
    path: PNG to write.
    num_queries: rows.
    k: neighbours per row.
    seed: which queries.

  Returns:
    path.
  """
  rng = np.random.default_rng(seed)
  queries = rng.choice(len(test_features), size=num_queries, replace=False)
  norm = lambda f: f / (np.linalg.norm(f, axis=1, keepdims=True) + 1e-8)
  sims = norm(test_features[queries]) @ norm(train_features).T
  neighbours = np.argsort(-sims, axis=1)[:, :k]
  plt = _pyplot()
  fig, axes = plt.subplots(num_queries, k + 1, figsize=((k + 1) * 1.1, num_queries * 1.15))
  for r, q in enumerate(queries):
    axes[r, 0].imshow(test_images[q])
    axes[r, 0].set_title("query" if r == 0 else "", fontsize=7)
    for c, n in enumerate(neighbours[r]):
      axes[r, c + 1].imshow(train_images[n])
      axes[r, c + 1].set_title(f"{sims[r, n]:.2f}", fontsize=6)
  for ax in axes.ravel():
    ax.set_xticks([])
    ax.set_yticks([])
  for ax in axes[:, 0]:
    for side in ax.spines.values():
      side.set_color("red")
      side.set_linewidth(2)
  fig.suptitle("Nearest training images (cosine similarity) of test queries", fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path
