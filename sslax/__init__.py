"""sslax: self-supervised learning in JAX/Flax, from a laptop CPU to accelerator pods."""

__version__ = "0.1.0"


def load_pretrained(workdir: str, step: int | None = None):
  """The backbone of a pretraining workdir (see sslax.evaluate.pretrained.load_pretrained)."""
  from sslax.evaluate.pretrained import load_pretrained as _load

  return _load(workdir, step)
