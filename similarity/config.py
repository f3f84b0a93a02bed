"""Typed, frozen configuration for the embedding model and its training.

Every checkpoint stores ``TrainConfig.to_dict()`` and rebuilds the exact model from it.
Entry points (CLI, notebook) build these objects; library code only reads them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

T = TypeVar("T")

BACKBONES = ("smallcnn", "efficientnet_lite0", "resnet18", "mobilenet_v3_small", "mobilenet_v3_large")
LOSSES = ("contrastive", "triplet", "multisimilarity", "normsoftmax")
SAMPLERS = ("pairs", "m_per_class", "random")
# what training teaches: "classes" (images of one class are neighbours; needs labels) or "copies" (an image and its
# edited copies are neighbours; self-supervised, labels unused: see similarity/copies.py)
OBJECTIVES = ("classes", "copies")
POOLINGS = ("default", "gem")
# the sampler each loss trains with when none is chosen (None: any sampler suits it): a pair loss needs
# explicit (a, b) pairs, a mining loss needs several images of each class in every batch
LOSS_SAMPLERS: Mapping[str, str | None] = MappingProxyType(
    {"contrastive": "pairs", "triplet": "m_per_class", "multisimilarity": "m_per_class", "normsoftmax": None})


def default_sampler(loss_name: str) -> str | None:
    """The sampler kind ``loss_name`` trains with unless one is chosen; ``None``: keep the recipe's."""
    if loss_name not in LOSSES:
        raise ValueError(f"unknown loss {loss_name!r}; choose one of {', '.join(LOSSES)}")
    return LOSS_SAMPLERS[loss_name]


@dataclass(frozen=True)
class PreprocessSpec:
    """How a decoded image becomes a model input; it travels with the weights.

    The eval transform is: convert to ``channels`` (1 = grayscale "L", 3 = "RGB"), resize the shorter
    side to ``resize`` (bilinear, antialiased), centre-crop to ``image_size`` x ``image_size``, scale to
    [0, 1], then normalise each channel with ``mean`` / ``std``. With ``flip_tta`` the embedding is the
    normalised sum of the embeddings of the image and its mirror image.
    """

    image_size: int = 28
    channels: int = 1
    mean: tuple[float, ...] = (0.2860,)
    std: tuple[float, ...] = (0.3530,)
    resize: int | None = None
    flip_tta: bool = False  # embed = normalise(f(x) + f(horizontal flip of x))

    def __post_init__(self) -> None:
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise ValueError(f"mean/std need {self.channels} values, got {self.mean} / {self.std}")
        if self.image_size < 8:
            raise ValueError(f"image_size must be >= 8, got {self.image_size}")
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))

    @property
    def resize_to(self) -> int:
        return self.resize or self.image_size


@dataclass(frozen=True)
class ModelConfig:
    """Backbone + projection head producing L2-normalised ``embedding_dim`` vectors."""

    backbone: str = "smallcnn"
    embedding_dim: int = 128
    pretrained: bool = True  # ImageNet weights for the photo backbones (ignored by smallcnn)
    trainable_blocks: int = -1  # -1: fine-tune all; 0: frozen backbone; N: only the last N blocks
    width: int = 32  # smallcnn base channel count
    dropout: float = 0.0  # before the projection head
    # how the last feature map becomes a vector: "default" (the backbone's own: average for EfficientNet, average
    # + max for the small CNN) or "gem" (generalised mean, ((1/HW) sum x^p)^(1/p), p starting at gem_p; p learnt
    # with gem_learnable, else fixed)
    pooling: str = "default"
    gem_p: float = 3.0
    gem_learnable: bool = False

    def __post_init__(self) -> None:
        if self.backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {self.backbone!r}; choose one of {', '.join(BACKBONES)}")
        if self.pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {self.pooling!r}; choose one of {', '.join(POOLINGS)}")
        if self.gem_p < 1.0:
            raise ValueError(f"gem_p must be >= 1, got {self.gem_p}")
        if self.embedding_dim < 2:
            raise ValueError(f"embedding_dim must be >= 2, got {self.embedding_dim}")


@dataclass(frozen=True)
class LossConfig:
    """Which metric-learning objective to train with, and its hyper-parameters."""

    name: str = "normsoftmax"
    # contrastive (on explicit pairs, cosine similarity): positives pulled above pos_margin,
    # negatives pushed below neg_margin
    pos_margin: float = 1.0
    neg_margin: float = 0.3
    # triplet with in-batch mining
    triplet_margin: float = 0.1
    mining: str = "semihard"  # semihard | hard | all
    # normalised softmax (proxy based)
    temperature: float = 0.05
    proxy_lr_multiplier: float = 10.0

    def __post_init__(self) -> None:
        if self.name not in LOSSES:
            raise ValueError(f"unknown loss {self.name!r}; choose one of {', '.join(LOSSES)}")
        if self.mining not in ("semihard", "hard", "all"):
            raise ValueError(f"unknown mining {self.mining!r}; choose semihard, hard or all")


@dataclass(frozen=True)
class SamplerConfig:
    """How training batches are drawn.

    ``pairs``: the classic Siamese set-up, batches of (a, b) pairs with ``positive_fraction`` same-class.
    ``m_per_class``: class-balanced batches of ``m_per_class`` images per class (for mining losses).
    ``random``: plain shuffled batches.
    """

    kind: str = "random"
    m_per_class: int = 4
    positive_fraction: float = 0.5

    def __post_init__(self) -> None:
        if self.kind not in SAMPLERS:
            raise ValueError(f"unknown sampler {self.kind!r}; choose one of {', '.join(SAMPLERS)}")
        if not 0.0 < self.positive_fraction < 1.0:
            raise ValueError(f"positive_fraction must be in (0, 1), got {self.positive_fraction}")
        if self.m_per_class < 2:
            raise ValueError(f"m_per_class must be >= 2, got {self.m_per_class}")


PRECISIONS = ("fp32", "bf16")


@dataclass(frozen=True)
class CopyConfig:
    """The copy objective's settings (``TrainConfig.objective == "copies"``), after SSCD (Pizzi et al., 2022).

    The loss is InfoNCE over two augmented views of each image at ``temperature`` plus ``entropy_weight`` times
    the KoLeo entropy regulariser. Validation holds out images, makes ``val_copies_per_image`` seeded copies of
    each and searches them among the held-out images plus up to ``val_distractors`` training images. After
    training, ``background_size`` training images are embedded and stored in the checkpoint for background score
    normalisation (a query's mean similarity to its ``score_norm_k`` nearest background images, times
    ``score_norm_beta``, is subtracted from its scores; SSCD's evaluation uses 3 and 1).
    """

    temperature: float = 0.05
    entropy_weight: float = 30.0
    val_copies_per_image: int = 1
    val_distractors: int = 1000
    background_size: int = 1000
    score_norm_k: int = 3
    score_norm_beta: float = 1.0

    def __post_init__(self) -> None:
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.entropy_weight < 0:
            raise ValueError(f"entropy_weight must be >= 0, got {self.entropy_weight}")
        if self.val_copies_per_image < 1:
            raise ValueError(f"val_copies_per_image must be >= 1, got {self.val_copies_per_image}")
        if self.val_distractors < 0 or self.background_size < 0:
            raise ValueError("val_distractors and background_size must be >= 0")
        if self.score_norm_k < 1:
            raise ValueError(f"score_norm_k must be >= 1, got {self.score_norm_k}")


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs besides the data."""

    model: ModelConfig = field(default_factory=ModelConfig)
    objective: str = "classes"  # one of OBJECTIVES; a checkpoint without the field is a class embedding
    loss: LossConfig = field(default_factory=LossConfig)  # the classes objective's loss
    copies: CopyConfig = field(default_factory=CopyConfig)  # the copies objective's settings
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    preprocess: PreprocessSpec = field(default_factory=PreprocessSpec)
    epochs: int = 10
    batch_size: int = 256
    lr: float = 2e-3
    backbone_lr_multiplier: float = 1.0  # lower for pretrained backbones
    weight_decay: float = 5e-4
    warmup_epochs: float = 0.5
    label_smoothing: float = 0.0
    augment: bool = True
    augment_strength: float = 1.0  # scales crop, shift, erasing and colour jitter; 1.0 = the tuned defaults
    augment_flip: bool = True  # horizontal flips in the augmentation (off where a mirror image is another class)
    # the frozen blocks' activations computed once (similarity/cached.py) for this many views of each training
    # image (view 0 plain, the others augmented): 1 caches the plain view, on which the head is fitted before
    # fine-tuning and validation runs, while the epochs run live; 2 or more also train the epochs from the cached
    # views; 0: no cache
    cache_views: int = 0
    patience: int = 3  # epochs without val improvement before stopping; 0 disables early stopping
    val_fraction: float = 0.1
    test_fraction: float = 0.0
    seed: int = 0
    num_workers: int = 0  # DataLoader workers for file-backed data
    threads: int = 0  # torch intra-op threads; 0 = all cores
    device: str = "auto"  # auto | cpu | cuda
    knn_k: int = 10  # neighbours in the validation kNN vote
    # wall-time budget of the whole run (0 = none): the epochs, up to ``epochs``, and the LR schedule are fitted
    # to it from the measured speed, so the run ends annealed inside it (see similarity/budget.py)
    budget_minutes: float = 0.0
    max_minutes: float = 0.0  # deprecated alias of budget_minutes, used when budget_minutes is 0
    compile: bool = False  # torch.compile the training forward pass (faster epochs after ~1 min of compiling)
    # training forward pass in fp32 or bfloat16 autocast (the loss and the optimiser stay fp32; embedding for the
    # index is always fp32). bf16 pays where the hardware has it: AVX-512 BF16 / AMX CPUs, Ampere+ GPUs
    precision: str = "fp32"

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 4:
            raise ValueError(f"batch_size must be >= 4, got {self.batch_size}")
        if not 0.0 <= self.val_fraction < 1.0 or not 0.0 <= self.test_fraction < 1.0:
            raise ValueError("val_fraction and test_fraction must be in [0, 1)")
        if self.val_fraction + self.test_fraction >= 0.9:
            raise ValueError("val_fraction + test_fraction leaves too little to train on")
        if self.budget_minutes < 0 or self.max_minutes < 0:
            raise ValueError(f"budget_minutes must be >= 0, got {self.budget_minutes or self.max_minutes}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.cache_views < 0:
            raise ValueError(f"cache_views must be >= 0, got {self.cache_views}")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"unknown objective {self.objective!r}; choose one of {', '.join(OBJECTIVES)}")
        if not 0.0 <= self.augment_strength <= 3.0:
            raise ValueError(f"augment_strength must be in [0, 3], got {self.augment_strength}")

    @property
    def time_budget_minutes(self) -> float:
        """The wall-time budget in force: ``budget_minutes``, else the deprecated ``max_minutes`` (0 = none)."""
        return self.budget_minutes or self.max_minutes

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        return from_dict(cls, data)


def from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Rebuild a (nested) frozen dataclass from ``asdict`` output; unknown keys are an error."""
    known = {f.name: f for f in fields(cls)}  # type: ignore[arg-type]
    unknown = set(data) - set(known)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields: {sorted(unknown)}")
    kwargs = {}
    defaults = cls()  # type: ignore[call-arg]
    for name, value in data.items():
        current = getattr(defaults, name)
        if is_dataclass(current) and isinstance(value, dict):
            value = from_dict(type(current), value)
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[name] = value
    return cls(**kwargs)


def read_config(path: str | os.PathLike) -> TrainConfig:
    """A :class:`TrainConfig` from a JSON file of ``TrainConfig.to_dict()`` (what ``simsearch tune`` writes)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"config file not found: {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} is not a JSON config: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object of TrainConfig fields, got {type(data).__name__}")
    try:
        return TrainConfig.from_dict(data)
    except TypeError as exc:
        raise ValueError(f"{path}: {exc}") from exc


def write_config(config: TrainConfig, path: str | os.PathLike) -> Path:
    """Write ``config`` as indented JSON that :func:`read_config` reads back equal."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config.to_dict(), indent=2) + "\n", encoding="utf-8")
    return path


def with_overrides(config: T, **changes: Any) -> T:
    """``dataclasses.replace`` that skips ``None`` values (handy for CLI flags)."""
    return replace(config, **{k: v for k, v in changes.items() if v is not None})  # type: ignore[type-var]
