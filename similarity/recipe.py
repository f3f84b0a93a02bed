"""A training recipe chosen from the data: look at the images, then pick backbone, input, batch and schedule.

:func:`inspect_data` measures a labelled collection (counts, image sizes, colour, pixel statistics of a seeded
sample) into a :class:`DataProfile`; :func:`choose_recipe` turns a profile, a time budget and a device into a
:class:`TrainConfig` plus the reasons for each choice, which the CLI prints and the checkpoint keeps
(``extra["recipe"]``). The rules are general, stated here once:

- **Small grayscale images** (median side <= 64 px, >= 90% grayscale): the small CNN from scratch at the
  native size (28 px stays 28), one channel, normalised with the data's own mean/std, flip test-time
  augmentation on where flips keep the class (the two views' average helped on Fashion-MNIST).
- **Everything else**: the pretrained EfficientNet-Lite0 (the offline ImageNet weights) with ImageNet
  normalisation, which those weights expect, never much above the images' own size. On a CPU with a budget
  (:func:`_pretrained_partial`) the most trainable blocks among ``TRAINABLE_CHOICES`` (every block, or only the
  last ones, so that the frozen ones run forward only), then the largest input size among 224/192/160/128 px,
  at which
  ``MIN_PARTIAL_EPOCHS`` epochs fit the budget at this machine's measured speeds (:func:`measure_machine_speed`,
  about 7 s). Epoch 0 is the starting point, the frozen features with a fitted head, kept when no epoch beats
  it (:mod:`similarity.cached`, :mod:`similarity.gain`). On a GPU, or without a budget, the whole backbone
  trains at the largest size at which ``MIN_EPOCHS`` epochs fit.
- **Small CNN width** from speed: the full width (``SMALL_CNN_WIDTHS[0]``) where a short probe of its training
  steps (:func:`measure_small_cnn_speed`, about 2 s) says ``MIN_WIDE_EPOCHS`` epochs fit the budget, else the
  narrower one, which runs about 3x the images per second (a 1-3 minute budget, or a slow CPU: one epoch of
  Fashion-MNIST at width 16 reaches 89% kNN where width 32 would not finish its first). The copy objective probes
  its own step instead (:func:`similarity.copy_recipe.measure_copy_speed`): two edited copies of each image.
- **Flips** (augmentation and test-time): on unless :func:`similarity.flips.check_flips` measures that a
  mirror image loses its class (digits, text).
- **Batch size** from the training-set size (about 20 steps an epoch at least), the **learning rate** scaled
  with the square root of the batch size (Adam), **validation** of 2000 images or 20% of the data, whichever
  is smaller and two per class at least (none when a class has fewer than 5 images), **early stopping** only on
  500+ validation images (on fewer, the noise in the metric would decide) and only in the last quarter of
  the schedule, at most ``MAX_EPOCHS`` epochs: the time budget (:mod:`similarity.budget`) fits the rest.
- **Precision**: the small CNN trains its forward pass in bfloat16 where the hardware does bf16 natively
  (AVX-512 BF16 or AMX CPUs, bf16 GPUs): about 1.4x the images per second on this project's CPU, so more
  epochs in the same budget. EfficientNet-Lite0 stays fp32: its depthwise convolutions gain nothing from bf16 on CPU.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import asdict, dataclass, replace
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from similarity.config import OBJECTIVES, LossConfig, ModelConfig, PreprocessSpec, SamplerConfig, TrainConfig
from similarity.data import LabelledImages, check_labelled
from similarity.imageio import ImageDecodeError, scale_to_fit
from similarity.models import default_preprocess

if TYPE_CHECKING:
    from similarity.flips import FlipCheck

log = logging.getLogger(__name__)

DEFAULT_BUDGET_MINUTES = 15.0
SMALL_IMAGE_MAX = 64  # px, median side at most this: a "small image" data set
GRAYSCALE_SHARE = 0.9  # this share of grayscale images or more: train on one channel
STATS_SIZE = 64  # px: pixel statistics are taken on images scaled down to fit this (small ones as they are)
PRETRAINED_SIZES = (224, 192, 160, 128)  # input sizes tried for the pretrained backbone, largest first
MIN_EPOCHS = 8  # the pretrained input size must leave room for this many epochs in the budget
MAX_EPOCHS = 30  # the most epochs a recipe asks for; the time budget usually decides
VAL_IMAGES, VAL_MAX_SHARE, VAL_MIN_PER_CLASS = 2000, 0.2, 5
PATIENCE, PATIENCE_MIN_VAL = 3, 500
COMPILE_MIN_IMAGES, COMPILE_MIN_MINUTES = 20_000, 10.0
SMALL_CNN_WIDTHS = (32, 16)  # the small CNN's widths, widest first
MIN_WIDE_EPOCHS = 4  # the widest small CNN is chosen where the budget fits this many of its epochs
# EfficientNet-Lite0 training speed at 224 px without a measurement: about 5.5 images/s per CPU thread
# (2 cores: ~25 images/s at 150 px, the TrashNet benchmark); a GPU does hundreds
ESTIMATED_IPS_224 = {"cpu_per_thread": 5.5, "cuda": 400.0}
# on a CPU, photos train the last blocks on cached activations of the frozen ones (similarity/cached.py)
# blocks trained (of EfficientNet-Lite0's 18 stages), deepest first: all (-1), or the last from its 28 px (at 224
# px input) stage, its 14 px stage, or its last two stages. On TrashNet at 160 px all blocks reached 92-93% kNN
# in 15 minutes, the last 12 about 87% (both about 55 images/s here), the last 6 at 224 px about 86%: depth
# pays more than input size, so every block trains wherever 128 px at least allows it, and fewer blocks only
# where the budget cannot hold enough epochs otherwise
TRAINABLE_CHOICES = (-1, 12, 9, 6)
MIN_PARTIAL_EPOCHS = 8  # a depth and size are chosen only where this many epochs fit (the speed probe is cautious:
# on TrashNet the 8 it planned for became 24)
LOADER_SHARE = 0.8  # of the measured speed, what an epoch gets while DataLoader workers decode on the same cores
# without a measurement, images/s per CPU thread at 224 px: the frozen blocks' forward pass, and training the last
# N blocks from cached input (2 cores with AVX-512: forward 35-50; all, 12, 9, 6 blocks: about 13, 20, 35, 65)
ESTIMATED_STAGE_IPS_224 = {"forward_per_thread": 30.0,
                           "train_per_thread": {-1: 12.0, 12: 20.0, 9: 30.0, 6: 55.0}}


@dataclass(frozen=True)
class MachineSpeed:
    """EfficientNet-Lite0 images/second at 224 px on this machine: embedding (forward, eval), and training the
    last N blocks from cached activations (``stage_train``: N -> images/s). Measured by
    :func:`measure_machine_speed` or estimated from the thread count."""

    forward: float
    stage_train: dict[int, float]
    measured: bool

    def at(self, ips_224: float, size: int) -> float:
        return ips_224 * (224 / size) ** 2

    def to_dict(self) -> dict[str, Any]:
        return {"forward_224": round(self.forward, 1),
                "stage_train_224": {str(k): round(v, 1) for k, v in self.stage_train.items()},
                "measured": self.measured}


@dataclass(frozen=True)
class DataProfile:
    """What a collection looks like. Sizes and colour come from ``sampled`` seeded images; ``mean``/``std``
    (per channel of ``channels``, pixels scaled to [0, 1]) from the same images scaled to fit ``STATS_SIZE``."""

    num_images: int
    num_classes: int
    min_per_class: int
    median_per_class: float
    median_width: int
    median_height: int
    grayscale_share: float
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    sampled: int
    in_memory: bool

    @property
    def median_side(self) -> int:
        return min(self.median_width, self.median_height)

    @property
    def is_small_grayscale(self) -> bool:
        return max(self.median_width, self.median_height) <= SMALL_IMAGE_MAX and self.channels == 1


@dataclass(frozen=True)
class Recipe:
    """A training config and why: ``reasons`` are short sentences, one per choice."""

    config: TrainConfig
    reasons: tuple[str, ...]
    source: str = "data"  # "data" (chosen by choose_recipe), "preset NAME", or "config FILE"
    profile: DataProfile | None = None

    def to_dict(self) -> dict[str, Any]:
        """What the checkpoint stores in ``extra["recipe"]`` (the config itself is stored beside it)."""
        return {"source": self.source, "reasons": list(self.reasons),
                "profile": asdict(self.profile) if self.profile is not None else None}

    def summary(self) -> dict[str, Any]:
        """The choices a person wants to see, in one flat dict."""
        c = self.config
        return {"source": self.source, "backbone": c.model.backbone, "pretrained": c.model.pretrained,
                "image_size": c.preprocess.image_size, "channels": c.preprocess.channels,
                "mean": [round(m, 4) for m in c.preprocess.mean], "std": [round(s, 4) for s in c.preprocess.std],
                "flip_tta": c.preprocess.flip_tta,
                "loss": c.loss.name if c.objective == "classes" else f"infonce+koleo({c.copies.entropy_weight:g})",
                "embedding_dim": c.model.embedding_dim,
                "batch_size": c.batch_size, "lr": c.lr, "max_epochs": c.epochs,
                "objective": c.objective, "pooling": c.model.pooling,
                "budget_minutes": c.time_budget_minutes, "val_fraction": round(c.val_fraction, 4),
                "patience": c.patience, "augment_strength": c.augment_strength, "compile": c.compile,
                "precision": c.precision}


def inspect_data(data: LabelledImages, sample: int = 300, seed: int = 0) -> DataProfile:
    """Profile ``data`` from ``sample`` images drawn with ``seed`` (unreadable files are passed over)."""
    if len(data) == 0:
        raise ValueError("cannot profile an empty collection")
    if sample < 1:
        raise ValueError(f"sample must be >= 1, got {sample}")
    # an unlabelled collection counts as no classes
    counts = np.bincount(data.labels, minlength=len(data.class_names)) if data.labelled else np.zeros(1, np.int64)
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(len(data), min(sample, len(data)), replace=False))
    images = []
    for i in chosen:
        try:
            images.append(data.load(int(i)))
        except ImageDecodeError as exc:
            log.warning("profile: skipping %s", exc)
    if not images:
        raise ValueError(f"none of the {len(chosen)} sampled images of {data.source or 'the data'} could be decoded")
    widths = [image.size[0] for image in images]
    heights = [image.size[1] for image in images]
    gray = float(np.mean([_is_grayscale(image) for image in images]))
    channels = 1 if gray >= GRAYSCALE_SHARE else 3
    mean, std = _pixel_stats(images, channels)
    return DataProfile(num_images=len(data), num_classes=len(data.class_names), min_per_class=int(counts.min()),
                       median_per_class=float(np.median(counts)), median_width=int(np.median(widths)),
                       median_height=int(np.median(heights)), grayscale_share=round(gray, 4), channels=channels,
                       mean=mean, std=std, sampled=len(images), in_memory=data.in_memory)


def _is_grayscale(image: Image.Image) -> bool:
    """A grey image, or a colour one whose channels (nearly) agree: 99% of pixels within 10 grey levels
    (JPEG leaves some chroma noise in grey photos saved as RGB)."""
    if image.mode in ("L", "1", "LA", "I", "I;16", "F"):
        return True
    rgb = np.asarray(scale_to_fit(image.convert("RGB"), min(STATS_SIZE, max(image.size))), dtype=np.int16)
    spread = rgb.max(axis=2) - rgb.min(axis=2)
    return bool(np.percentile(spread, 99) <= 10)


def _pixel_stats(images: list[Image.Image], channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std over all pixels of ``images`` converted to ``channels``, in [0, 1]."""
    mode = "L" if channels == 1 else "RGB"
    total = np.zeros(channels)
    squares = np.zeros(channels)
    n = 0
    for image in images:
        small = scale_to_fit(image, min(STATS_SIZE, max(image.size))).convert(mode)
        pixels = np.asarray(small, dtype=np.float64).reshape(-1, channels) / 255.0
        total += pixels.sum(axis=0)
        squares += (pixels ** 2).sum(axis=0)
        n += len(pixels)
    mean = total / n
    std = np.sqrt(np.maximum(squares / n - mean ** 2, 0.0))
    std = np.where(std < 1e-3, 1.0, std)  # a constant channel: leave it unscaled rather than divide by ~0
    return tuple(round(float(m), 4) for m in mean), tuple(round(float(s), 4) for s in std)


def native_bf16(device: str = "cpu") -> bool:
    """Whether ``device`` computes bfloat16 in hardware (so autocast is faster, not an emulation).  On a CPU that
    takes bf16 instructions (AVX512-BF16 or AMX): oneDNN also "supports" bf16 on any AVX-512 CPU, by converting
    to fp32 and back, which makes the small CNN slower than fp32 (``bench/train_precision.py``)."""
    import torch

    if device == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if not (torch.backends.mkldnn.is_available() and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())):
        return False
    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(bool(probe()) for probe in probes if probe is not None)


def estimated_images_per_second(device: str = "cpu", threads: int | None = None) -> float:
    """EfficientNet-Lite0 training images/second at 224 px, estimated without running anything."""
    if device == "cuda":
        return ESTIMATED_IPS_224["cuda"]
    import torch

    return ESTIMATED_IPS_224["cpu_per_thread"] * (threads or torch.get_num_threads())


def measure_images_per_second(device: str = "cpu", image_size: int = 128, batch_size: int = 8,
                              steps: int = 3) -> float:
    """EfficientNet-Lite0 training images/second at 224 px, measured: ``steps`` forward + backward passes of
    random ``image_size`` images after one warm-up, scaled to 224 px by the pixel count (a few seconds on CPU)."""
    import torch

    from similarity.models import EmbeddingNet

    model_config = ModelConfig(backbone="efficientnet_lite0", pretrained=False)
    net = EmbeddingNet(model_config, default_preprocess(model_config, image_size)).to(device)
    x = torch.randn(batch_size, 3, image_size, image_size, device=device)
    if device == "cpu":  # as training runs it
        net, x = net.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(net.parameters(), lr=1e-6)
    seconds = 0.0
    for i in range(steps + 1):
        begin = time.perf_counter()
        loss = net(x).square().sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device == "cuda":
            torch.cuda.synchronize()
        if i:  # the first pass pays for allocation and kernel selection
            seconds += time.perf_counter() - begin
    return batch_size * steps / seconds * (image_size / 224) ** 2


def estimated_machine_speed(threads: int | None = None) -> MachineSpeed:
    import torch

    threads = threads or torch.get_num_threads()
    return MachineSpeed(ESTIMATED_STAGE_IPS_224["forward_per_thread"] * threads,
                        {n: ips * threads for n, ips in ESTIMATED_STAGE_IPS_224["train_per_thread"].items()}, False)


def measure_machine_speed(image_size: int = 160, batch_size: int = 16, steps: int = 4) -> MachineSpeed:
    """:class:`MachineSpeed` measured on the CPU: ``steps`` batches of random ``image_size`` images through the
    pretrained EfficientNet-Lite0 (forward), and through each of ``TRAINABLE_CHOICES`` last-block depths
    (forward + backward from cached input), after one warm-up each, scaled to 224 px by the pixel count (about
    10 s on 2 cores)."""
    import torch

    from similarity.models import EmbeddingNet

    def timed(step: Callable[[], object]) -> float:
        for _ in range(2):  # the first passes pay for allocation and kernel selection
            step()
        begin = time.perf_counter()
        for _ in range(steps):
            step()
        return batch_size * steps / (time.perf_counter() - begin) * (image_size / 224) ** 2

    x = torch.randn(batch_size, 3, image_size, image_size).contiguous(memory_format=torch.channels_last)
    stage_train: dict[int, float] = {}
    forward = 0.0
    for n in TRAINABLE_CHOICES:
        model_config = ModelConfig(backbone="efficientnet_lite0", pretrained=False, trainable_blocks=n)
        net = EmbeddingNet(model_config, default_preprocess(model_config, image_size)).to(memory_format=torch.channels_last)
        net.eval()
        with torch.no_grad():  # not inference_mode: the cached input feeds a training step
            if not forward:
                forward = timed(lambda: net(x))
            h = net.activations(x).clone()
        net.train()
        optimizer = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=1e-6)

        def train_step() -> None:
            loss = net.forward_from(h).square().sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        stage_train[n] = timed(train_step)
    return MachineSpeed(forward, stage_train, True)


def measure_small_cnn_speed(image_size: int, width: int = SMALL_CNN_WIDTHS[0], batch_size: int = 128,
                            steps: int = 3) -> float:
    """Training images per second of the small CNN at ``width`` on this CPU (random one-channel
    ``image_size`` images, forward + backward + Adam step, after two warm-up steps; about 2 s on 2 cores)."""
    import torch

    from similarity.models import EmbeddingNet

    model_config = ModelConfig(backbone="smallcnn", embedding_dim=128, pretrained=False, width=width)
    net = EmbeddingNet(model_config, PreprocessSpec(image_size=image_size, channels=1, mean=(0.5,), std=(0.5,)))
    net = net.to(memory_format=torch.channels_last).train()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-6)
    x = torch.randn(batch_size, 1, image_size, image_size).contiguous(memory_format=torch.channels_last)

    def step() -> None:
        loss = net(x).square().sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(2):
        step()
    begin = time.perf_counter()
    for _ in range(steps):
        step()
    return batch_size * steps / (time.perf_counter() - begin)


def choose_recipe(profile: DataProfile, budget_minutes: float = DEFAULT_BUDGET_MINUTES, device: str = "cpu", *,
                  images_per_second: float | None = None, cpu_count: int | None = None,
                  speed: MachineSpeed | None = None, flips: FlipCheck | None = None,
                  small_cnn_speed: float | None = None) -> Recipe:
    """The recipe for data like ``profile`` trained within ``budget_minutes`` on ``device`` ("cpu" or "cuda").

    ``images_per_second``: EfficientNet-Lite0 full fine-tuning speed at 224 px on this machine (see
    :func:`measure_images_per_second`; used on a GPU, or without a budget); ``speed``: the CPU's embedding and
    last-block training speeds (:func:`measure_machine_speed`); both estimated when None; ``small_cnn_speed``:
    the widest small CNN's training images/s (:func:`measure_small_cnn_speed`; None keeps that width). ``flips``: whether a
    mirror image keeps its class (:func:`similarity.flips.check_flips`); flips stay on when None. ``cpu_count``
    sizes the data-loading workers (default: ``os.cpu_count()``).
    """
    if budget_minutes < 0:
        raise ValueError(f"budget_minutes must be >= 0, got {budget_minutes}")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
    reasons: list[str] = []
    validation: list[str] = []
    val_fraction, patience = _validation(profile, validation)
    n_train = profile.num_images - round(val_fraction * profile.num_images)
    size_text = f"{profile.median_width}x{profile.median_height} px median, {profile.grayscale_share:.0%} grayscale"
    if profile.is_small_grayscale:
        config = _small_cnn(profile, n_train, budget_minutes, reasons, size_text, bf16=native_bf16(device),
                            images_per_second=small_cnn_speed)
    elif device == "cpu" and budget_minutes:
        config = _pretrained_partial(profile, n_train, budget_minutes, speed or estimated_machine_speed(), reasons,
                                     size_text)
    else:
        ips = images_per_second or estimated_images_per_second(device)
        config = _pretrained(profile, n_train, budget_minutes, device, ips, reasons, size_text,
                             measured=images_per_second is not None)
    config = _with_flips(config, flips, reasons)
    reasons += validation
    workers = 0 if profile.in_memory else min(4, max(1, (cpu_count or os.cpu_count() or 1) - 1))
    epochs = MAX_EPOCHS
    config = replace(config, val_fraction=val_fraction, patience=patience, num_workers=workers,
                     budget_minutes=budget_minutes, epochs=epochs)
    reasons.append(f"at most {epochs} epochs; " + (f"the {budget_minutes:g}-minute budget fits the epochs and "
                                                   "the LR schedule to the measured speed"
                                                   if budget_minutes else "no time budget"))
    return Recipe(config, tuple(reasons), "data", profile)


def recipe_for(data: LabelledImages, budget_minutes: float = DEFAULT_BUDGET_MINUTES, device: str = "cpu",
               objective: str | None = None) -> Recipe:
    """The recipe for ``data``, everything measured: the data's profile, whether flips keep its classes, and
    (for photos on a CPU with a budget) this machine's speed. ``objective`` (see
    :data:`similarity.config.OBJECTIVES`): by default "classes" for labelled data and "copies" for unlabelled
    data (:func:`similarity.copy_recipe.for_copies`); "classes" on unlabelled data is a :class:`DatasetError`."""
    from similarity.copy_recipe import for_copies, measure_copy_speed, with_copy_speed
    from similarity.flips import check_flips

    objective = objective or ("classes" if data.labelled else "copies")
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}; choose one of {', '.join(OBJECTIVES)}")
    if objective == "classes":
        check_labelled(data)
    profile = inspect_data(data)
    flips = check_flips(data) if objective == "classes" else None  # a mirror image is a copy
    speed = ips = small = None
    probe_small_cnn = profile.is_small_grayscale and budget_minutes and device == "cpu"
    if probe_small_cnn and objective == "classes":  # the copy objective probes its own step below
        small = measure_small_cnn_speed(preprocess_for(ModelConfig(backbone="smallcnn"), profile).image_size)
    if not profile.is_small_grayscale and budget_minutes:
        if device == "cpu":
            speed = measure_machine_speed()
        else:
            ips = measure_images_per_second(device)
    if objective == "classes":
        return choose_recipe(profile, budget_minutes, device, images_per_second=ips, speed=speed, flips=flips,
                             small_cnn_speed=small)
    # each step trains on two copies of every image: the depth and size are chosen for twice the images
    recipe = choose_recipe(replace(profile, num_images=2 * profile.num_images), budget_minutes, device,
                           images_per_second=ips, speed=speed, small_cnn_speed=small)
    copies = for_copies(replace(recipe, profile=profile), labelled=data.labelled)
    if not probe_small_cnn:
        return copies
    # the width from the copy step itself: its edits and two views cost more than the class probe measures
    widest = replace(copies.config, model=replace(copies.config.model, width=SMALL_CNN_WIDTHS[0]))
    return with_copy_speed(copies, measure_copy_speed(data, widest))


def _with_flips(config: TrainConfig, flips: FlipCheck | None, reasons: list[str]) -> TrainConfig:
    """Flip augmentation (and, where the recipe chose it, flip test-time augmentation) only where the data says
    that a mirror image keeps its class."""
    if flips is None or flips.preserves_class:
        if flips is not None:
            reasons.append(f"horizontal flips on: {flips.reason}")
        return config
    reasons.append(f"horizontal flips off (augmentation and test-time): {flips.reason}")
    return replace(config, augment_flip=False, preprocess=replace(config.preprocess, flip_tta=False))


def preprocess_for(model: ModelConfig, profile: DataProfile, image_size: int | None = None) -> PreprocessSpec:
    """The input a backbone gets for data like ``profile``: the small CNN takes the data's channels and
    statistics (native size unless ``image_size``), pretrained backbones their ImageNet normalisation."""
    if model.backbone == "smallcnn":
        return PreprocessSpec(image_size=image_size or max(8, profile.median_side), channels=profile.channels,
                              mean=profile.mean, std=profile.std)
    return default_preprocess(model, image_size)


def _validation(profile: DataProfile, reasons: list[str]) -> tuple[float, int]:
    """2000 images or 20%, whichever is smaller, and two per class at least (a query needs a same-class image
    to be found); none when that would take over a quarter of the data or a class has under 5 images."""
    n = profile.num_images
    if profile.num_classes == 0:
        reasons.append("no class validation split: the images have no labels")
        return 0.0, 0
    n_val = max(2 * profile.num_classes, min(VAL_IMAGES, int(VAL_MAX_SHARE * n)))
    if profile.min_per_class < VAL_MIN_PER_CLASS or n_val > 1.25 * VAL_MAX_SHARE * n:
        reasons.append(f"no validation split: too few images per class ({profile.min_per_class} in the smallest, "
                       f"{n / profile.num_classes:.0f} on average); the last epoch is kept")
        return 0.0, 0
    fraction = n_val / n
    patience = PATIENCE if n_val >= PATIENCE_MIN_VAL else 0
    reasons.append(f"validation: {n_val} of {n} images ({fraction:.1%}); "
                   + (f"early stopping after {PATIENCE} epochs without improvement" if patience
                      else f"no early stopping on fewer than {PATIENCE_MIN_VAL} (the best epoch is still kept)"))
    return fraction, patience


def batch_size_for(n_train: int, largest: int) -> int:
    """The largest power of two giving about 20 steps an epoch, within [16, largest]."""
    wanted = max(1, n_train // 20)
    return int(min(largest, max(16, 2 ** int(math.log2(wanted)))))


def _small_cnn(profile: DataProfile, n_train: int, budget_minutes: float, reasons: list[str],
               size_text: str, *, bf16: bool, images_per_second: float | None = None) -> TrainConfig:
    width = SMALL_CNN_WIDTHS[0]
    if images_per_second and budget_minutes:
        epochs = budget_minutes * 60 * images_per_second / max(1, n_train)
        if epochs < MIN_WIDE_EPOCHS:
            width = SMALL_CNN_WIDTHS[-1]
        reasons.append(f"width {width}: the width-{SMALL_CNN_WIDTHS[0]} CNN trains {images_per_second:.0f} images/s "
                       f"here, {epochs:.1f} epochs in the budget ({MIN_WIDE_EPOCHS} wanted for that width)")
    model = ModelConfig(backbone="smallcnn", embedding_dim=128, pretrained=False, width=width)
    preprocess = replace(preprocess_for(model, profile), flip_tta=True)
    batch = batch_size_for(n_train, 256)
    compile_ = profile.num_images >= COMPILE_MIN_IMAGES and budget_minutes >= COMPILE_MIN_MINUTES
    reasons += [
        f"{size_text}: small grayscale images -> smallcnn from scratch at the native {preprocess.image_size} px, "
        "1 channel",
        f"normalisation from {profile.sampled} sampled images: mean {profile.mean[0]:.4f}, std {profile.std[0]:.4f}",
        "flip test-time augmentation on where flips keep the class: training flips images too",
        f"batch {batch} for {n_train} training images, lr {3e-3 * math.sqrt(batch / 256):.2g} (sqrt-scaled)",
    ]
    if compile_:
        reasons.append(f"torch.compile: {profile.num_images} images and a {budget_minutes:g}-minute budget pay back "
                       "its ~1 minute of compiling")
    reasons.append("bfloat16 forward pass: this machine computes bf16 natively (more epochs in the budget)" if bf16
                   else "fp32: this machine has no native bfloat16")
    return TrainConfig(model=model, loss=LossConfig(name="normsoftmax", temperature=0.05),
                       sampler=SamplerConfig(kind="random"), preprocess=preprocess, batch_size=batch,
                       lr=round(3e-3 * math.sqrt(batch / 256), 6), weight_decay=5e-4, warmup_epochs=0.3,
                       compile=compile_, precision="bf16" if bf16 else "fp32")


def _pretrained(profile: DataProfile, n_train: int, budget_minutes: float, device: str, ips_224: float,
                reasons: list[str], size_text: str, *, measured: bool) -> TrainConfig:
    model = ModelConfig(backbone="efficientnet_lite0", embedding_dim=128, pretrained=True, trainable_blocks=-1,
                        dropout=0.2)
    batch = batch_size_for(n_train, 128 if device == "cuda" else 32)
    n_val = profile.num_images - n_train
    sizes = _sizes_for(profile)
    seconds = budget_minutes * 60 * 0.9
    size = sizes[-1]
    for candidate in sizes:
        ips = ips_224 * (224 / candidate) ** 2
        epoch_seconds = n_train / ips + n_val / (3 * ips)  # embedding runs about 3x faster than training
        if not budget_minutes or MIN_EPOCHS * epoch_seconds + (n_val + 300) / (3 * ips) <= seconds:
            size = candidate
            break
    speed = f"{ips_224:.0f} images/s at 224 px ({'measured' if measured else 'estimated'})"
    fit = (f"the largest of {'/'.join(map(str, sizes))} px at which {MIN_EPOCHS} epochs fit the "
           f"{budget_minutes:g}-minute budget at {speed}" if budget_minutes
           else "no time budget: the largest size that suits the images")
    lr = round(1e-3 * math.sqrt(batch / 32), 6)
    reasons += [
        f"{size_text}: not small grayscale -> pretrained efficientnet_lite0 (ImageNet weights, offline), "
        "3 channels, ImageNet normalisation (what the weights expect)",
        f"input {size} px: {fit}",
        f"batch {batch} for {n_train} training images, lr {lr:.2g} (sqrt-scaled), backbone at 0.3x the lr",
        "flip test-time augmentation off: it doubles the cost of embedding with a large backbone",
    ]
    return TrainConfig(model=model, loss=LossConfig(name="normsoftmax", temperature=0.05),
                       sampler=SamplerConfig(kind="random"), preprocess=default_preprocess(model, size),
                       batch_size=batch, lr=lr, backbone_lr_multiplier=0.3, weight_decay=1e-4, warmup_epochs=0.5)


def _epoch_speed(speed: MachineSpeed, trainable: int, size: int) -> float:
    """Training images/s at ``size`` px with ``trainable`` blocks: the frozen ones forward (none when all train),
    then the trained ones forward and backward."""
    train = speed.at(speed.stage_train[trainable], size)
    return train if trainable < 0 else 1 / (1 / speed.at(speed.forward, size) + 1 / train)


def _sizes_for(profile: DataProfile) -> list[int]:
    """The input sizes worth trying, largest first: never much above the images' own size (the smallest
    candidate that covers it; upscaling adds no detail, and 192 px on 150 px TrashNet scored below 160 px)."""
    cap = min((s for s in PRETRAINED_SIZES if s >= profile.median_side), default=PRETRAINED_SIZES[0])
    return [s for s in PRETRAINED_SIZES if s <= cap]


def _pretrained_partial(profile: DataProfile, n_train: int, budget_minutes: float, speed: MachineSpeed,
                        reasons: list[str], size_text: str) -> TrainConfig:
    """Pretrained EfficientNet-Lite0 on a CPU: only the last blocks train, so the frozen ones run forward only.

    The depth is the most of ``TRAINABLE_CHOICES`` blocks, and then the input size the largest of
    ``PRETRAINED_SIZES`` up to the images' own size, at which
    ``MIN_PARTIAL_EPOCHS`` epochs fit the budget, after caching the plain view of each image once (the head is
    fitted on it before fine-tuning, and validation runs from it) and keeping time for the final evaluation.
    """
    seconds = 0.9 * budget_minutes * 60
    n_val = profile.num_images - n_train
    sizes = _sizes_for(profile)
    choice = None
    for n in TRAINABLE_CHOICES:
        for size in sizes:
            forward = speed.at(speed.forward, size)
            fixed = (n_train + n_val) / forward + 2 * profile.num_images / forward  # plain cache, final evaluation
            # the loader's workers share the cores (LOADER_SHARE)
            epoch_ips = LOADER_SHARE * _epoch_speed(speed, n, size)
            if fixed + MIN_PARTIAL_EPOCHS * n_train / epoch_ips <= seconds:
                choice = size, n, epoch_ips, fixed
                break
        if choice:
            break
    if choice is None:  # nothing fits: the cheapest, and the budget fits what it can
        size, n = sizes[-1], TRAINABLE_CHOICES[-1]
        choice = size, n, LOADER_SHARE * _epoch_speed(speed, n, size), 0.0
    size, trainable, epoch_ips, _ = choice
    model = ModelConfig(backbone="efficientnet_lite0", embedding_dim=128, pretrained=True,
                        trainable_blocks=trainable, dropout=0.2)
    batch = batch_size_for(n_train, 32)
    lr = round(1e-3 * math.sqrt(batch / 32), 6)
    how = "measured" if speed.measured else "estimated"
    blocks = "all 18 blocks" if trainable < 0 else f"the last {trainable} of 18 blocks"
    reasons += [
        f"{size_text}: not small grayscale -> pretrained efficientnet_lite0 (ImageNet weights, offline), "
        "3 channels, ImageNet normalisation (what the weights expect)",
        f"input {size} px, {blocks} trained: the most blocks, then the largest size up to the images' own, at "
        f"which {MIN_PARTIAL_EPOCHS} epochs fit the budget at {epoch_ips:.0f} images/s ({how}"
        + ("" if trainable < 0 else "; the frozen blocks run forward only") + ")",
        "epoch 0 is the starting point: the pretrained features with a head fitted on them (their principal "
        "directions or a linear probe, whichever validates better); it is kept when no epoch beats it on validation",
        f"batch {batch} for {n_train} training images, lr {lr:.2g} (sqrt-scaled), backbone at 0.3x the lr",
        "flip test-time augmentation off: it doubles the cost of embedding with a large backbone",
    ]
    return TrainConfig(model=model, loss=LossConfig(name="normsoftmax", temperature=0.05),
                       sampler=SamplerConfig(kind="random"), preprocess=default_preprocess(model, size),
                       batch_size=batch, lr=lr, backbone_lr_multiplier=0.3, weight_decay=1e-4, warmup_epochs=0.5,
                       cache_views=1)
