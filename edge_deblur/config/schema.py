"""Dataclass schemas for the YAML configs under configs/."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from ..errors import ConfigError
from .core import apply_overrides, error_key, from_dict, parse_override, suggest
from .inherit import Origins, load_layers
from .validation import ValSetConfig, check_unique


def _range(where: str, name: str, pair, lo=None, hi=None):
    if len(pair) != 2 or pair[0] > pair[1]:
        raise ConfigError(f"{where}.{name}: expected [low, high] with low <= high, got {list(pair)}")
    if lo is not None and pair[0] < lo:
        raise ConfigError(f"{where}.{name}: low end {pair[0]} is below {lo}")
    if hi is not None and pair[1] > hi:
        raise ConfigError(f"{where}.{name}: high end {pair[1]} is above {hi}")


@dataclass
class BlurConfig:
    """Realistic synthetic blur. Lengths are in pixels of the image being blurred."""

    homography_prob: float = 0.6          # sub-frame homography warps averaged in linear light; else a kernel
    length: list[float] = field(default_factory=lambda: [2.0, 24.0])  # trajectory extent (px)
    length_log: bool = False              # draw the extent log-uniformly (most blur moderate, a long tail)
    subframes: int = 24                   # exposure samples along the trajectory
    anxiety: float = 0.005                # Boracchi-Foi: random acceleration strength
    impulsive_prob: float = 0.2           # Boracchi-Foi: chance of an abrupt shake
    rotation_deg: float = 0.6             # max in-plane rotation over the exposure (homography mode)
    zoom: float = 0.01                    # max relative scale change over the exposure (homography mode)
    gamma: float = 2.2                    # linear-light averaging: undo, average, re-apply
    gamma_range: list[float] = field(default_factory=list)  # [lo, hi]: draw the gamma per image instead
    display_prob: float = 0.0             # share of images averaged in display space (gamma 1: no brightening)
    layer_prob: float = 0.0               # share of homography-mode images with a moving foreground layer
    layer_length: list[float] = field(default_factory=lambda: [4.0, 40.0])  # the layer's own path extent (px)
    # share of homography-mode images summed from a few discrete frames along the path, as GoPro's
    # pairs were made (7-13 frames of 240 fps video) rather than a continuous sweep: fast motion
    # leaves separate copies. Each frame has its own short exposure (duty, a share of its slot).
    # Single images (blur.synthesize, torch_blur.BatchBlur); clips (synthesize_clip) sweep continuously.
    discrete_prob: float = 0.0
    discrete_frames: list[int] = field(default_factory=lambda: [7, 13])  # odd counts drawn: the middle frame is the target
    discrete_duty: list[float] = field(default_factory=lambda: [0.1, 0.6])
    highlight_gain: list[float] = field(default_factory=lambda: [1.0, 3.0])  # boost near-saturated pixels before blur, clip after
    defocus_prob: float = 0.15
    defocus_radius: list[float] = field(default_factory=lambda: [0.5, 2.5])
    noise_prob: float = 0.7
    poisson_peak: list[float] = field(default_factory=lambda: [300.0, 3000.0])  # photons at white
    gaussian_sigma: list[float] = field(default_factory=lambda: [0.0, 0.01])   # read noise, [0, 1] units
    jpeg_prob: float = 0.3
    jpeg_quality: list[int] = field(default_factory=lambda: [60, 95])
    sharp_prob: float = 0.05              # keep a few sharp inputs so the model learns to leave them alone
    quantize: bool = True                 # round the blurred input to 8-bit levels like a real frame (JPEG does it anyway)
    # where the sharp target sits in a warped (homography-mode) sample: 'mid_time', the scene at the
    # middle of the exposure (as GoPro's and REDS' centre frames), or 'centroid', the time-average of
    # the sub-frames (the PSF's centre of mass, as kernel mode). On Boracchi-Foi paths with a varying
    # speed the two lie a median 21% of the blur length apart, and only the centroid can be read
    # off the blurred image (docs/TRAINING_LOG.md, session 12).
    align: str = "mid_time"

    def validate(self, where: str = "blur"):
        for name in ("homography_prob", "impulsive_prob", "defocus_prob", "noise_prob", "jpeg_prob", "sharp_prob",
                     "display_prob", "layer_prob", "discrete_prob"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ConfigError(f"{where}.{name}: probability must be in [0, 1], got {v}")
        _range(where, "length", self.length, lo=0.0)
        if self.length_log and self.length[0] <= 0:
            raise ConfigError(f"{where}.length: a log-uniform draw (length_log: true) needs a lower end > 0, got "
                              f"{self.length} (it fell back to uniform); e.g. [4.0, {self.length[1]}]")
        for name, hi in (("anxiety", None), ("rotation_deg", None), ("zoom", 0.5)):
            v = getattr(self, name)
            if not v >= 0 or (hi is not None and not v < hi):
                raise ConfigError(f"{where}.{name}: must be >= 0" + (f" and < {hi}" if hi is not None else "")
                                  + f", got {v}")
        _range(where, "highlight_gain", self.highlight_gain, lo=1.0)
        _range(where, "layer_length", self.layer_length, lo=0.0)
        _range(where, "defocus_radius", self.defocus_radius, lo=0.0)
        _range(where, "discrete_frames", self.discrete_frames, lo=1)
        if not any(k % 2 for k in range(int(self.discrete_frames[0]), int(self.discrete_frames[1]) + 1)):
            raise ConfigError(f"{where}.discrete_frames: needs an odd count (the middle frame is the sharp target), "
                              f"got {list(self.discrete_frames)}; widen the range, e.g. [7, 13]")
        _range(where, "discrete_duty", self.discrete_duty, lo=0.0, hi=1.0)
        if self.align not in ("mid_time", "centroid"):
            raise ConfigError(f"{where}.align: {self.align!r} is not 'mid_time' or 'centroid'"
                              f"{suggest(str(self.align), ('mid_time', 'centroid'))}")
        _range(where, "poisson_peak", self.poisson_peak, lo=1.0)
        _range(where, "gaussian_sigma", self.gaussian_sigma, lo=0.0)
        _range(where, "jpeg_quality", self.jpeg_quality, lo=1, hi=100)
        if self.subframes < 1:
            raise ConfigError(f"{where}.subframes: must be >= 1, got {self.subframes}")
        if self.gamma <= 0:
            raise ConfigError(f"{where}.gamma: must be > 0, got {self.gamma}")
        if self.gamma_range:
            _range(where, "gamma_range", self.gamma_range, lo=0.1)


@dataclass
class DataConfig:
    sharp_roots: list[str] = field(default_factory=list)   # folders of sharp images (synthetic blur)
    pair_roots: list[str] = field(default_factory=list)    # GoPro/REDS-layout blur/sharp pairs
    pair_exclude: list[str] = field(default_factory=list)  # scene names held out of training
    pair_prob: float = 0.0          # share of training samples drawn from real pairs
    pair_stack: list[int] = field(default_factory=lambda: [1])  # odd frame counts: real blur k frames long (see PairedDataset)
    crop: int = 128
    scale: list[float] = field(default_factory=lambda: [0.5, 1.0])  # random downscale of sharp photos before cropping
    downscale: list[float] = field(default_factory=lambda: [1.0, 1.0])  # blur at d x the crop, then shrink both d x (see SyntheticDataset)
    blur: BlurConfig = field(default_factory=BlurConfig)
    workers: int = 1
    clip_frames: int = 0            # > 0: train on synthetic clips of this many frames (recurrent models)
    synth: str = "cpu"              # cpu: DataLoader workers + OpenCV; torch: batched on the training device (train/device_data.py)
    pack: Optional[str] = None      # data.synth torch: read the photos/pairs from this data pack (edge-deblur pack) instead of the folders
    # validation
    val_pairs: Optional[str] = None                # pairs root used for validation
    val_scenes: list[str] = field(default_factory=list)  # scenes of val_pairs to validate on (empty: all)
    val_synthetic: Optional[str] = None            # folder of sharp images for the fixed synthetic set
    val_synthetic_count: int = 4
    val_synthetic_size: list[int] = field(default_factory=lambda: [1280, 720])
    val_synthetic_cache: str = "runs/val_synthetic"
    val_seed: int = 1234
    val_sets: list[ValSetConfig] = field(default_factory=list)  # more sets, after the two above (see config/validation.py)

    def validation_sets(self) -> list[ValSetConfig]:
        """Every set to validate on: ``val_pairs`` (named ``real``), the synthetic set from
        ``val_synthetic`` (named ``synthetic_fullres``; mid-exposure targets, as these older keys
        always made it), then ``val_sets``."""
        out = []
        if self.val_pairs:
            out.append(ValSetConfig(path=self.val_pairs, name="real", kind="real", scenes=list(self.val_scenes)))
        if self.val_synthetic:
            out.append(ValSetConfig(path=self.val_synthetic_cache, name="synthetic_fullres", kind="synthetic",
                                    source=self.val_synthetic, count=self.val_synthetic_count,
                                    size=list(self.val_synthetic_size), seed=self.val_seed, align="mid_time"))
        return out + list(self.val_sets)

    def validate(self, where: str = "data"):
        if not self.sharp_roots and not self.pair_roots:
            raise ConfigError(f"{where}: set sharp_roots (synthetic blur) or pair_roots (real pairs), or both")
        if not 0.0 <= self.pair_prob <= 1.0:
            raise ConfigError(f"{where}.pair_prob: must be in [0, 1], got {self.pair_prob}")
        if self.pair_prob > 0 and not self.pair_roots:
            raise ConfigError(f"{where}.pair_prob: is {self.pair_prob} but pair_roots is empty")
        if not self.pair_stack or any(k < 1 or k % 2 == 0 for k in self.pair_stack):
            raise ConfigError(f"{where}.pair_stack: must list odd frame counts >= 1 (1 = the pair as it is), "
                              f"got {self.pair_stack}")
        if self.crop < 16 or self.crop % 16:
            raise ConfigError(f"{where}.crop: must be a multiple of 16 and >= 16, got {self.crop}")
        if self.clip_frames < 0:
            raise ConfigError(f"{where}.clip_frames: must be >= 0 (0: single images), got {self.clip_frames}")
        if self.workers < 0:
            raise ConfigError(f"{where}.workers: must be >= 0 data-loader processes (0: in the training process), "
                              f"got {self.workers}")
        _range(where, "scale", self.scale, lo=0.05, hi=4.0)
        _range(where, "downscale", self.downscale, lo=1.0, hi=4.0)
        check_unique(self.validation_sets(), f"{where}.val_sets")
        if self.synth not in ("cpu", "torch"):
            raise ConfigError(f"{where}.synth: {self.synth!r} is not one of cpu, torch{suggest(self.synth, ('cpu', 'torch'))}")
        if self.pack and self.synth != "torch":
            raise ConfigError(f"{where}.pack is set but {where}.synth is {self.synth!r}; packs feed data.synth: torch")


@dataclass
class TrainSection:
    iters: int = 20000
    batch_size: int = 16
    lr: float = 1e-3
    min_lr_ratio: float = 0.02
    warmup_iters: int = 500
    weight_decay: float = 1e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.99])
    loss: str = "charbonnier"        # charbonnier | l1 | mse | psnr (minus per-image PSNR, as NAFNet)
    charbonnier_eps: float = 1e-3
    freq_weight: float = 0.05        # weight of the FFT amplitude/phase L1 loss
    lowpass_weight: float = 0.0      # weight of the L1 loss between lowpass_scale-box means (tone)
    lowpass_scale: int = 8
    adv_weight: float = 0.0          # > 0 turns on GAN mode with a PatchGAN discriminator
    disc_lr: float = 2e-4
    ema_decay: float = 0.999
    grad_clip: float = 0.5
    amp: bool = True                 # used on CUDA only
    bf16: bool = False               # CPU: bfloat16 autocast (fast where the CPU has AVX512-BF16 or AMX)
    replay_pool: int = 0             # > 0: complete each batch from a pool of this many recent samples (train/replay.py)
    replay_fresh: int = 0            # new samples per step with replay_pool (0: a quarter of the batch)
    channels_last: bool = True
    threads: int = 0                 # torch CPU threads (0: leave torch's default)
    val_every: int = 1000
    ckpt_every: int = 500
    keep_every: int = 0              # > 0: also keep every such checkpoint as ckpt_<iter>.safetensors (for averaging)
    log_every: int = 50
    seed: int = 0
    init_from: Optional[str] = None  # start from this checkpoint's weights (fresh optimizer); an image edgenet
                                     # starts a recurrent one, and model: {type: edgenet_rnn} alone takes its sizes
    tbptt: int = 0                   # recurrent clips: back-propagate through at most this many frames (0: the clip)
    compile: bool = False
    time_limit: float = 0.0          # > 0: stop after this many seconds of training (resume counts them);
                                     # the cosine schedule then ends at whichever comes first, iters or time

    def validate(self, where: str = "train"):
        losses = ("charbonnier", "l1", "mse", "psnr")
        if self.loss not in losses:
            raise ConfigError(f"{where}.loss: {self.loss!r} is not one of {', '.join(losses)}{suggest(self.loss, losses)}")
        for name in ("iters", "batch_size", "val_every", "ckpt_every", "log_every", "lowpass_scale"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{where}.{name}: must be >= 1, got {getattr(self, name)}")
        if self.keep_every < 0 or (self.keep_every and self.keep_every % self.ckpt_every
                                   and self.keep_every % self.val_every):
            raise ConfigError(f"{where}.keep_every: must be 0 (off) or a multiple of ckpt_every ({self.ckpt_every}) "
                              f"or val_every ({self.val_every}), got {self.keep_every}")
        if self.replay_pool and self.replay_pool < self.batch_size:
            raise ConfigError(f"{where}.replay_pool: must hold at least one batch ({self.batch_size}), got {self.replay_pool}")
        if self.replay_fresh < 0 or self.replay_fresh > self.batch_size:
            raise ConfigError(f"{where}.replay_fresh: must be in [0, batch_size={self.batch_size}], got {self.replay_fresh}")
        if self.tbptt < 0:
            raise ConfigError(f"{where}.tbptt: must be >= 0 frames (0: the whole clip), got {self.tbptt}")
        if self.time_limit < 0:
            raise ConfigError(f"{where}.time_limit: must be >= 0 seconds (0: no limit), got {self.time_limit}")
        if self.lr <= 0:
            raise ConfigError(f"{where}.lr: must be > 0, got {self.lr}")
        if not 0 <= self.ema_decay < 1:
            raise ConfigError(f"{where}.ema_decay: must be in [0, 1), got {self.ema_decay}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ConfigError(f"{where}.min_lr_ratio: must be in [0, 1] (the cosine's end as a share of lr), "
                              f"got {self.min_lr_ratio}")
        if self.warmup_iters < 0:
            raise ConfigError(f"{where}.warmup_iters: must be >= 0, got {self.warmup_iters}")
        if self.weight_decay < 0:
            raise ConfigError(f"{where}.weight_decay: must be >= 0, got {self.weight_decay}")
        b = list(self.betas) if isinstance(self.betas, (list, tuple)) else [self.betas]
        if len(b) != 2 or not all(isinstance(v, (int, float)) and 0 <= v < 1 for v in b):
            raise ConfigError(f"{where}.betas: must be two numbers in [0, 1) (Adam's beta1, beta2), e.g. [0.9, 0.99]; "
                              f"got {self.betas}")
        if self.compile:
            raise ConfigError(f"{where}.compile: torch.compile is not wired into the training loop; set it false "
                              "(the CPU speed-ups that are: train.bf16 and train.channels_last)")


@dataclass
class TrainConfig:
    name: str = "edgenet_s"
    model: dict[str, Any] = field(default_factory=lambda: {"type": "edgenet", "size": "S"})
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainSection = field(default_factory=TrainSection)
    out_dir: str = "runs/edgenet_s"

    def validate(self, where: str = ""):
        from ..models import validate_spec
        from .core import _keyed

        try:
            validate_spec(self.model)
        except ConfigError as e:  # under model., so that the loader names the file and line of the key
            key = getattr(e, "key", None)
            raise _keyed(str(e), f"model.{key}" if key and key in (self.model or {}) else "model") from e


def load_train_config(path=None, overrides=(), base: dict | None = None) -> TrainConfig:
    """The training config in ``path`` (after its chain of ``base:`` files, see config/inherit.py)
    over the mapping ``base``, with ``key=value`` overrides. An error about a key names the file
    and line it was written at (or the override)."""
    data = dict(base or {})
    origins = Origins()
    if path is not None:
        layered, origins = load_layers(path)
        data.update(layered)
    for text in overrides:
        origins.add_override(".".join(parse_override(text)[0]), text)
    data = apply_overrides(data, overrides, TrainConfig)
    try:
        return from_dict(TrainConfig, data)
    except ConfigError as e:
        where = origins.of(error_key(e))
        if where is None:
            raise
        raise ConfigError(f"{where}: {e}") from e
