"""sslax: self-supervised learning in JAX/Flax."""
import os
import re

from setuptools import find_packages, setup

with open(os.path.join(os.path.dirname(__file__), "sslax", "__init__.py")) as f:
  VERSION = re.search(r'__version__ = "([^"]+)"', f.read()).group(1)

setup(
    name="sslax",
    version=VERSION,
    description="Self-supervised learning (SimCLR and friends) in JAX/Flax, from a laptop CPU to TPU pods.",
    long_description=open(os.path.join(os.path.dirname(__file__), "README.md")).read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["sslax", "sslax.*"]),
    package_data={"sslax.native": ["*.cc"]},  # C++ kernels, compiled for the host on first use.
    python_requires=">=3.10",
    install_requires=[
        "jax>=0.10,<0.11",
        "flax>=0.12,<0.13",
        "optax>=0.2.8,<0.3",
        "orbax-checkpoint>=0.12,<0.13",
        "ml-collections>=1.1",
        "absl-py>=2.1",
        "numpy>=1.26",
        "tensorflow-cpu>=2.19,<2.22",  # tf.data and TFDS input pipelines only; never on the accelerator.
        "tensorflow-datasets>=4.9.9",
        "importlib_resources",  # tensorflow-datasets 4.9.10 imports it without declaring it.
        "tensorboardX>=2.6",
        "pillow>=10",
        "matplotlib>=3.8",
        "scikit-learn>=1.4",  # t-SNE plots; tabular datasets.
    ],
    extras_require={
        "test": ["pytest>=8", "pytest-xdist>=3.5", "scikit-image>=0.22",  # skimage: the Lab reference.
                 "filelock>=3.12",  # Locks the persistent compilation cache the test workers share.
                 "pytest-timeout>=2.3",  # pytest.ini: a hung test fails with its stacks instead of stalling CI.
                 "nbclient>=0.10", "nbformat>=5.10", "ipykernel>=6.29"],  # Runs notebooks/ in the tests.
        # On an NVIDIA GPU host: pip install -e .[cuda]
        "cuda": ["jax[cuda12]>=0.10,<0.11"],
        # On a Cloud TPU VM: pip install -e .[tpu]
        "tpu": ["jax[tpu]>=0.10,<0.11"],
        # benchmarks/torch_reference.py only (PyTorch's step beside sslax's); never needed by sslax.
        # 2.13.0 is the CPU build this project's machines hold; pip elsewhere may fetch a CUDA build.
        "bench": ["torch==2.13.0"],
    },
    license="Apache-2.0",
)
