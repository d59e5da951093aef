"""On-device, per-example augmentations (run inside the compiled train step)."""
from sslax.augment.views import (color_jitter, crop_boxes, default_simclr_augment_config, example_keys,
                                 multicrop_views, precropped_views, resize_weights, simclr_view, simclr_views)

__all__ = ["color_jitter", "crop_boxes", "default_simclr_augment_config", "example_keys", "multicrop_views",
           "precropped_views", "resize_weights", "simclr_view", "simclr_views"]
