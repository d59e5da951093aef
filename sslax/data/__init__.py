"""Data: sources (TFDS offline, image folders, synthetic) and deterministic batch sampling."""
from sslax.data.loader import EpochSampler, prefetch, train_batches
from sslax.data.sources import (DatasetNotFoundError, ImageDataset, default_data_dir, load_dataset,
                                load_image_folder, load_tfds, synthetic_dataset)

__all__ = ["DatasetNotFoundError", "EpochSampler", "ImageDataset", "default_data_dir", "load_dataset",
           "load_image_folder", "load_tfds", "prefetch", "synthetic_dataset",
           "train_batches"]
