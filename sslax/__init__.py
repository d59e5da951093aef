"""sslax: self-supervised learning in JAX/Flax, from a laptop CPU to accelerator pods."""

__version__ = "0.1.0"
