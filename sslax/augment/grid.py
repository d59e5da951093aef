"""Image grids for previews (no flags here: the training CLI imports this module too)."""
from __future__ import annotations

import numpy as np


def view_grid(images: np.ndarray, views: list[np.ndarray], scale: int = 4, pad: int = 2) -> np.ndarray:
  """Tiles originals and views into one uint8 image.

  Args:
    images: uint8 (N, H, W, 3) originals.
    views: list of V float (N, S, S, 3) views in [0, 1].
    scale: integer upscaling of every cell.
    pad: white pixels between cells.

  Returns:
    uint8 (rows, cols, 3) grid, one row per image: original, then its V views.
  """
  cells = [[images[i].astype(np.float32) / 255.0] + [v[i] for v in views] for i in range(images.shape[0])]
  size = max(max(c.shape[0], c.shape[1]) for row in cells for c in row) * scale
  n_rows, n_cols = len(cells), len(cells[0])
  grid = np.ones((n_rows * (size + pad) + pad, n_cols * (size + pad) + pad, 3), np.float32)
  for r, row in enumerate(cells):
    for c, cell in enumerate(row):
      cell = np.repeat(np.repeat(np.clip(cell, 0, 1), scale, axis=0), scale, axis=1)
      top, left = pad + r * (size + pad), pad + c * (size + pad)
      # Smaller views (crop_size < image size) are centred in their cell.
      dy, dx = (size - cell.shape[0]) // 2, (size - cell.shape[1]) // 2
      grid[top + dy:top + dy + cell.shape[0], left + dx:left + dx + cell.shape[1]] = cell
  return np.round(grid * 255).astype(np.uint8)
