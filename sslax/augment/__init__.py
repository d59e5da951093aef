"""On-device, per-example augmentations (run inside the compiled train step)."""
from sslax.augment.views import (default_simclr_augment_config, example_keys, multicrop_views, resize_weights,
                                 simclr_view, simclr_views)

__all__ = ["default_simclr_augment_config", "example_keys", "multicrop_views", "resize_weights", "simclr_view", "simclr_views"]
