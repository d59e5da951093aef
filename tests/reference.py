"""Helpers for reference checks in the tests (imported as `reference`: pytest puts tests/ on sys.path)."""
import numpy as np


def numerical_grad(f, x, eps=1e-6):
  """Central-difference gradient of a scalar float64 function `f` at `x`."""
  g = np.zeros_like(x)
  for idx in np.ndindex(x.shape):
    xp, xm = x.copy(), x.copy()
    xp[idx] += eps
    xm[idx] -= eps
    g[idx] = (f(xp) - f(xm)) / (2 * eps)
  return g
