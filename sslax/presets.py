"""The fields every image SSL config shares, and the `cpu`/`tiny` preset sizes.

Method configs (configs/<method>.py) start from `base_config(method, preset)`, which adds the
method's own section with its defaults (e.g. `simclr.temperature`, declared in the method
class), and override what their published recipe says.
"""
import ml_collections
from ml_collections import config_dict

from sslax.augment import default_simclr_augment_config

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def base_config(method: str, preset: str) -> ml_collections.ConfigDict:
  """Unlocked config for `method` with the `cifar10` (accelerator), `cpu` or `tiny` sizes.

  Args:
    method: a key of sslax.methods.METHODS.
    preset: 'cifar10' (ResNet-18 CIFAR stem, batch 512, LARS, 800 epochs), 'cpu' (about 20
      minutes on 2 CPU cores) or 'tiny' (tests).

  Returns:
    ConfigDict (unlocked, so the method config can add its section).
  """
  from sslax import host
  from sslax.methods import method_class

  c = ml_collections.ConfigDict()
  c.preset = preset
  c.method = method
  c.seed = 0
  method_cls = method_class(method)
  if method_cls.config_fields:
    c[method] = method_cls.default_config()

  c.data = ml_collections.ConfigDict()
  c.data.source = "tfds"  # 'tfds', 'folder' or 'synthetic'.
  c.data.name = "cifar10"
  c.data.data_dir = config_dict.placeholder(str)  # Default: $TFDS_DATA_DIR.
  c.data.train_split = "train"
  c.data.eval_split = "test"
  c.data.image_size = config_dict.placeholder(int)  # Resize+center-crop on load; None keeps the stored size.
  c.data.center_crop_fraction = 1.0  # With image_size: central square of this fraction of the shorter side.
  # True: decode the split into host memory at image_size (small datasets). False: stream from
  # disk, cropping each view from the full image (sslax/data/streaming.py). None: stream when
  # the decoded split would exceed max_in_memory_gb.
  c.data.in_memory = config_dict.placeholder(bool)
  c.data.max_in_memory_gb = 16.0
  c.data.num_workers = 0  # Streaming: host decoding threads (0: one per CPU core).
  c.data.prefetch = 2  # Batches prepared ahead of the step (both paths).
  c.data.on_corrupt = "skip"  # Streaming: 'skip' a corrupt image (one warning naming it) or 'error'.
  c.data.folder = ""  # For source='folder': DIR/<class>/*.jpg or DIR/*.jpg.
  c.data.eval_folder = ""
  # Image-text methods (CLIP): captions of each image. Folders: 'txt' (<image stem>.txt beside
  # each image, a caption per line) or a CSV file of (path, caption) rows. TFDS: a text feature
  # ('captions/text' for coco_captions). Up to max_captions per image, caption_max_len byte tokens each.
  c.data.captions = ""
  c.data.caption_feature = ""
  c.data.max_captions = 5
  c.data.caption_max_len = 64
  c.data.mean = CIFAR_MEAN
  c.data.std = CIFAR_STD
  # source='synthetic': deterministic random images, no files and no TensorFlow (tests, benchmarks).
  c.data.synthetic = ml_collections.ConfigDict()
  c.data.synthetic.num_train_examples = 1024
  c.data.synthetic.num_eval_examples = 256
  c.data.synthetic.image_size = 32
  c.data.synthetic.num_classes = 10
  c.data.synthetic.seed = 0

  c.augment = default_simclr_augment_config()
  c.augment.color_jitter_strength = 0.5  # CIFAR value (1.0 on ImageNet).
  c.augment.crop_scale = (0.08, 1.0)

  c.model = ml_collections.ConfigDict()
  c.model.backbone = "resnet18"
  c.model.stem = "cifar"
  c.model.width_multiplier = 1.0
  c.model.dtype = "float32"
  # auto: convolution gradients as GEMMs on a CPU backend (sslax/models/conv.py), XLA's on GPU/TPU.
  c.model.conv_impl = "auto"
  # auto: BatchNorm with a two-pass backward on a CPU backend (sslax/models/norm.py), Flax's on GPU/TPU.
  c.model.bn_impl = "auto"
  c.model.input = "rgb"  # rgb | lightness (the L of Lab: colourisation) | split_brain (L and ab halves).
  c.model.projector = ml_collections.ConfigDict()
  c.model.projector.hidden_dims = (2048,)
  c.model.projector.output_dim = 128
  c.model.projector.use_bn = True
  c.model.projector.last_bn = False
  c.model.projector.activation = "relu"
  # Set by methods that declare these heads (Method.heads), None/0 otherwise.
  c.model.predictor = None  # A head config (mlp_head).
  c.model.num_prototypes = 0  # The prototype layer's K.
  c.model.classifier = None  # A head config (mlp_head) over grouped projections (jigsaw, relative patch).
  c.model.decoder = None  # A decoder config (conv_decoder) for the autoencoders.
  c.model.text = None  # A text tower config (text_tower) for image-text methods (CLIP, SigLIP).
  c.model.patch_size = 4  # ViT backbones: 4x4 patches on 32x32 CIFAR images.
  c.model.pool = "cls"  # ViT backbones' feature: cls (the class token) | mean (of the patch tokens).

  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.name = "lars"  # lars | sgd | adamw
  c.optimizer.base_learning_rate = 1.0
  c.optimizer.lr_scaling = "linear"  # linear | sqrt | none (relative to batch 256)
  c.optimizer.weight_decay = 1e-6
  c.optimizer.momentum = 0.9
  c.optimizer.nesterov = False
  c.optimizer.trust_coefficient = 1e-3
  c.optimizer.b1 = 0.9
  c.optimizer.b2 = 0.999
  c.optimizer.fixed_lr_modules = ()  # Param groups trained at the constant peak rate (SimSiam: predictor).

  c.batch_size = 512
  c.total_epochs = config_dict.placeholder(float)
  c.total_steps = config_dict.placeholder(int)
  c.warmup_epochs = config_dict.placeholder(float)
  c.warmup_steps = config_dict.placeholder(int)
  c.total_epochs = 800.0
  c.warmup_epochs = 10.0
  # Stop (with a checkpoint) at this step without finishing the schedule; rerun without it to go on.
  c.stop_at_step = config_dict.placeholder(int)
  # Benchmark budget: stop (checkpoint + final kNN) once this many minutes of training have
  # passed, wherever the schedule is. Time-based, so not reproducible step for step.
  c.max_train_minutes = config_dict.placeholder(float)

  c.log_every_steps = 50
  # Read each step's loss before dispatching the next (the host waits on every step). Off: the
  # host reads step i's metrics while step i+1 runs. On: for debugging, an error surfaces at
  # the step that raised it.
  c.sync_every_step = False
  host.add_config_fields(c)  # cpu_devices, cpu_malloc, cpu_hugepages
  # Warn in the log when the embedding std falls below this fraction of 1/sqrt(d) (collapse).
  c.collapse_warning_fraction = 0.2
  # ... or when the RankMe effective rank of the batch embeddings falls below this (dimensional
  # collapse: SwAV's failed CPU run kept its std ratio near 0.7 at rank 2; healthy runs stay above 5).
  c.collapse_warning_rank = 3.0
  c.checkpoint = ml_collections.ConfigDict()
  c.checkpoint.every_steps = 2000
  c.checkpoint.max_to_keep = 3
  c.checkpoint.async_save = True

  # Online linear probe on stop_gradient(backbone features) of the first view, trained with
  # its own Adam optimizer inside the train step (no effect on the encoder).
  c.online_probe = ml_collections.ConfigDict()
  c.online_probe.enabled = True
  c.online_probe.learning_rate = 1e-3

  c.knn = ml_collections.ConfigDict()
  c.knn.every_steps = 10000  # 0 disables the periodic kNN monitor; it also runs at the end.
  c.knn.k = 200
  c.knn.temperature = 0.1
  c.knn.chunk_size = 256
  c.knn.batch_size = 1000  # Feature-extraction batch.
  c.knn.max_train_examples = config_dict.placeholder(int)  # First N train examples as the memory bank (None: all).
  c.knn.max_test_examples = config_dict.placeholder(int)  # First N test examples (None: all).
  c.knn.at_end = True  # Also evaluate (and plot the kNN curve) when training ends.
  c.knn.image_size = config_dict.placeholder(int)  # Resize eval images to this size (None: stored size).

  if preset == "cpu":
    # Sized for ~20 minutes of training on 2 CPU cores (about 500 image pairs/s); tuned with
    # short runs, see BENCHMARKS.md. 20x20 crops because XLA's CPU convolutions cost about
    # 7x more at 32x32; kNN is evaluated on the full 32x32 images.
    c.model.width_multiplier = 0.25  # 16-wide ResNet-18, as in lightly's CPU benchmark.
    c.model.projector.hidden_dims = (512,)
    c.batch_size = 128
    c.augment.crop_size = 20
    c.augment.crop_scale = (0.2, 1.0)
    c.optimizer.name = "sgd"
    c.optimizer.base_learning_rate = 0.8  # x batch/256 = 0.4 at batch 128.
    c.optimizer.lr_scaling = "linear"
    c.optimizer.weight_decay = 5e-4
    c.total_epochs = 11.0
    c.warmup_epochs = 0.2
    c.log_every_steps = 50
    c.checkpoint.every_steps = 500
    c.knn.every_steps = 1000
  elif preset == "tiny":
    c.model.width_multiplier = 0.0625
    c.model.projector.hidden_dims = (32,)
    c.model.projector.output_dim = 16
    c.batch_size = 16
    c.augment.crop_size = 16
    c.total_epochs = None
    c.total_steps = 6
    c.warmup_epochs = None
    c.warmup_steps = 2
    c.log_every_steps = 2
    c.checkpoint.every_steps = 3
    c.checkpoint.async_save = False
    c.knn.every_steps = 0
    c.knn.k = 20
    c.knn.batch_size = 200
    c.knn.max_train_examples = 1000
    c.knn.max_test_examples = 500
  return c


def redundancy_reduction_sizes(c: ml_collections.ConfigDict, preset: str) -> None:
  """Projector and optimizer sizes shared by Barlow Twins and VICReg (3-layer BN-ReLU projector).

  cifar10: projector 2048-2048-2048, batch 256, LARS lr 0.3 x batch/256, weight decay 1e-4,
  1000 epochs (solo-learn's published CIFAR configs, da Costa et al. 2022); cpu: a
  512-512-512 projector and SGD lr 0.2 x batch/256 on the SimCLR CPU sizes; tiny: 32 wide.
  """
  width = {"cifar10": 2048, "cpu": 512, "tiny": 32}[preset]
  c.model.projector.hidden_dims = (width, width)
  c.model.projector.output_dim = width
  c.model.projector.last_bn = False
  if preset == "cifar10":
    c.batch_size = 256
    c.optimizer.base_learning_rate = 0.3
    c.optimizer.weight_decay = 1e-4
    c.total_epochs = 1000.0
  elif preset == "cpu":
    c.optimizer.base_learning_rate = 0.2


def mlp_head(hidden_dims, output_dim: int, *, use_bn: bool = True, last_bn: bool = False,
             activation: str = "relu", output_init_scale: float = 1.0) -> ml_collections.ConfigDict:
  """A projector/predictor head config (see models.MLPHead)."""
  return ml_collections.ConfigDict(dict(hidden_dims=tuple(hidden_dims), output_dim=output_dim, use_bn=use_bn,
                                        last_bn=last_bn, activation=activation, output_init_scale=output_init_scale))


def conv_decoder(width: int, num_upsamples: int = 3, out_channels=3) -> ml_collections.ConfigDict:
  """A decoder head config (see models.ConvDecoder; a tuple of out_channels: models.SplitDecoder)."""
  return ml_collections.ConfigDict(dict(width=width, num_upsamples=num_upsamples, out_channels=out_channels))


def vit_decoder(width: int, depth: int, num_heads: int, mlp_ratio: float = 4.0) -> ml_collections.ConfigDict:
  """MAE's Transformer decoder head config (see models.vit.MaskedPatchDecoder); its patch size
  and dtype are the backbone's (config.model.patch_size, config.model.dtype)."""
  return ml_collections.ConfigDict(dict(kind="vit", width=width, depth=depth, num_heads=num_heads,
                                        mlp_ratio=mlp_ratio))


def text_tower(width: int, depth: int, num_heads: int = 4, max_len: int = 64, *,
               logit_scale_init: float = 2.6593, logit_bias_init: float = -10.0) -> ml_collections.ConfigDict:
  """A text tower config (see models.text.TextTower): a causal Transformer over byte tokens.

  logit_scale_init defaults to CLIP's log(1/0.07); SigLIP uses log(10) = 2.3026 and bias -10.
  """
  return ml_collections.ConfigDict(dict(width=width, depth=depth, num_heads=num_heads, max_len=max_len,
                                        logit_scale_init=logit_scale_init, logit_bias_init=logit_bias_init))


def context_head(width: int, depth: int, num_steps: int) -> ml_collections.ConfigDict:
  """CPC's context network and predictions as the classifier head config (see
  models.context.ContextPredictor; its grid is the method's, num_steps = len(config.cpc.steps))."""
  return ml_collections.ConfigDict(dict(kind="cpc_context", width=width, depth=depth, num_steps=num_steps))


def preset_width(preset: str, cifar10: int, cpu: int = 512, tiny: int = 32) -> int:
  """A head width by preset: the published value, the CPU-sized one, or the tiny one."""
  return {"cifar10": cifar10, "cpu": cpu, "tiny": tiny}[preset]


def solo_learn_cifar(c: ml_collections.ConfigDict, *, optimizer: str, learning_rate: float, weight_decay: float,
                     epochs: float = 1000.0) -> None:
  """The shared part of solo-learn's CIFAR-10 recipes (da Costa et al. 2022, JMLR,
  scripts/pretrain/cifar/*.yaml): ResNet-18 CIFAR stem, batch 256, linear lr scaling, 10
  warm-up epochs then cosine, LARS with eta 0.02 excluding biases and norms, 1000 epochs."""
  c.batch_size = 256
  c.optimizer.name = optimizer
  c.optimizer.base_learning_rate = learning_rate
  c.optimizer.weight_decay = weight_decay
  c.optimizer.trust_coefficient = 0.02
  c.total_epochs = epochs
  c.warmup_epochs = 10.0


def cpu_multicrop(c: ml_collections.ConfigDict) -> None:
  """Multi-crop on the CPU sizes: two 20x20 global crops of 30-100% of the image and two
  12x12 local crops of 10-30% (SwAV and DINO)."""
  c.augment.crop_scale = (0.3, 1.0)
  c.augment.num_local_crops = 2
  c.augment.local_crop_size = 12
  c.augment.local_crop_scale = (0.1, 0.3)


def tile_pretext(c: ml_collections.ConfigDict, preset: str, num_classes: int) -> None:
  """Shared sizes of the tile-classification pretext tasks (jigsaw, relative patch location).

  Views are whole 32x32 crops (cells of 10 pixels, tiles of 9: a random gap of 0-2 pixels
  between neighbours; tiny: 16x16 crops, tiles of 4; relative patch location's cpu preset
  overrides them with 48x48 views and 11-pixel patches); a per-tile projector (the papers'
  fc6) and a classifier over the concatenated tile projections (fc7, fc8) of
  `num_classes` outputs; no colour jitter (the tasks' own defences replace it); SGD with
  Nesterov momentum, lr 0.1 x batch/256, weight decay 5e-4, as RotNet.
  """
  hidden, proj, cls_hidden = {"cifar10": (1024, 512, 4096), "cpu": (256, 128, 512), "tiny": (32, 16, 32)}[preset]
  c.model.projector = mlp_head((hidden,), proj)
  c.model.classifier = mlp_head((cls_hidden,), num_classes)
  c.augment.crop_size = 16 if preset == "tiny" else 32
  c[c.method].tile_size = 4 if preset == "tiny" else 9
  c.augment.crop_scale = (0.5, 1.0)
  c.augment.color_jitter_prob = 0.0
  c.optimizer.name = "sgd"
  c.optimizer.nesterov = True
  c.optimizer.weight_decay = 5e-4
  c.optimizer.base_learning_rate = 0.1
  if preset == "cifar10":
    c.batch_size = 256
    c.total_epochs = 100.0


def channel_prediction(c: ml_collections.ConfigDict, preset: str, input_kind: str, out_channels) -> None:
  """Shared sizes of the cross-channel (Lab) prediction tasks: colourisation and split-brain.

  The backbone sees `input_kind` ('lightness' or 'split_brain'); a convolutional decoder
  (Dense to a coarse grid, three 2x up-convolutions) gives `out_channels` logits per pixel;
  crops of 32 (cifar10) or 16 (cpu, tiny: a multiple of the decoder's 8x) pixels with flips
  and no colour changes (the colours are the targets); SGD, lr 0.1 x batch/256, weight decay
  5e-4, as the denoising autoencoder.
  """
  c.model.input = input_kind
  c.model.decoder = conv_decoder(preset_width(preset, 256, cpu=64, tiny=16), out_channels=out_channels)
  plain_pretext(c, preset, crop_size=32 if preset == "cifar10" else 16)


def plain_pretext(c: ml_collections.ConfigDict, preset: str, crop_size: int) -> None:
  """Views and optimizer of the pretext tasks without photometric augmentation (denoising
  autoencoder, colourisation, split-brain, counting, context encoder).

  Crops of `crop_size` covering 50-100% of the image, flips, no colour jitter or grayscale
  (the colours are the targets, or must stay consistent between the inputs); SGD with
  momentum, lr 0.1 x batch/256 with a cosine decay, weight decay 5e-4; cifar10: batch 256,
  200 epochs.
  """
  c.augment.crop_size = crop_size
  c.augment.crop_scale = (0.5, 1.0)
  c.augment.color_jitter_prob = 0.0
  c.augment.grayscale_prob = 0.0
  c.optimizer.name = "sgd"
  c.optimizer.weight_decay = 5e-4
  c.optimizer.base_learning_rate = 0.1
  if preset == "cifar10":
    c.batch_size = 256
    c.total_epochs = 200.0


def imagenet_recipe(c: ml_collections.ConfigDict, *, epochs: float, batch_size: int = 4096,
                    learning_rate: float, weight_decay: float) -> None:
  """The shared part of the published ImageNet recipes (SimCLR, Chen et al. 2020, appendix B;
  BYOL, Grill et al. 2020, appendix C): ImageNet-1k streamed from TFDS (`imagenet2012`, prepared
  offline; see README "ImageNet"), ResNet-50, 224x224 random resized crops (area 0.08-1) taken
  from the full image, colour-jitter strength 1.0, LARS (eta 0.001, biases and BN excluded) with
  lr `learning_rate` x batch/256, 10 warm-up epochs then cosine decay. Evaluation images are the
  central 87.5% resized to 224 (resize 256, crop 224); the kNN monitor uses 50,000 training and
  10,000 validation images.
  """
  c.preset = "imagenet"
  c.data.name = "imagenet2012"
  c.data.train_split = "train"
  c.data.eval_split = "validation"
  c.data.image_size = 224
  c.data.center_crop_fraction = 0.875
  c.data.in_memory = False
  c.data.mean = IMAGENET_MEAN
  c.data.std = IMAGENET_STD
  c.model.backbone = "resnet50"
  c.model.stem = "imagenet"
  c.model.width_multiplier = 1.0
  c.augment.crop_size = 224
  c.augment.crop_scale = (0.08, 1.0)
  c.augment.color_jitter_strength = 1.0
  c.batch_size = batch_size
  c.optimizer.name = "lars"
  c.optimizer.base_learning_rate = learning_rate
  c.optimizer.lr_scaling = "linear"
  c.optimizer.weight_decay = weight_decay
  c.optimizer.trust_coefficient = 1e-3
  c.total_epochs = epochs
  c.warmup_epochs = 10.0
  c.log_every_steps = 100
  c.checkpoint.every_steps = 1000
  c.knn.every_steps = 5000
  c.knn.max_train_examples = 50000
  c.knn.max_test_examples = 10000
  c.knn.batch_size = 1024
