"""Named example recipes, each a :class:`TrainConfig` (CLI flags override single fields).

The recipe a run gets by default is chosen from its data (:mod:`similarity.recipe`); these are fixed examples,
kept for the demo and the benchmarks. They carry no time budget: ``simsearch train`` sets one
(``--budget-minutes``), and then ``epochs`` is the most epochs the budget may fit."""

from __future__ import annotations

from similarity.config import LossConfig, ModelConfig, PreprocessSpec, SamplerConfig, TrainConfig
from similarity.models import default_preprocess


def fashion_mnist_full() -> TrainConfig:
    """The recipe behind the README's Fashion-MNIST figures (about 15 minutes on 2 CPU cores): 7 epochs of
    normalised-softmax training, torch.compile'd, flip test-time augmentation when embedding."""
    return TrainConfig(
        model=ModelConfig(backbone="smallcnn", embedding_dim=128, width=32),
        loss=LossConfig(name="normsoftmax", temperature=0.05),
        sampler=SamplerConfig(kind="random"),
        preprocess=PreprocessSpec(image_size=28, channels=1, mean=(0.2860,), std=(0.3530,), flip_tta=True),
        epochs=7, batch_size=256, lr=3e-3, weight_decay=5e-4, warmup_epochs=0.3,
        val_fraction=0.05, patience=0, compile=True,
    )


def fashion_mnist_demo() -> TrainConfig:
    """A shorter schedule for the demo (one epoch, no flip test-time augmentation): about 2 minutes."""
    from dataclasses import replace

    full = fashion_mnist_full()
    return replace(full, epochs=1, compile=False, preprocess=replace(full.preprocess, flip_tta=False))


def photos(image_size: int = 150) -> TrainConfig:
    """Fine-tune ImageNet EfficientNet-Lite0 (offline weights) on a folder of photos."""
    model = ModelConfig(backbone="efficientnet_lite0", embedding_dim=128, pretrained=True, trainable_blocks=-1,
                        dropout=0.2)
    return TrainConfig(
        model=model,
        loss=LossConfig(name="normsoftmax", temperature=0.05),
        sampler=SamplerConfig(kind="random"),
        preprocess=default_preprocess(model, image_size),
        epochs=12, batch_size=32, lr=1e-3, backbone_lr_multiplier=0.3, weight_decay=1e-4, warmup_epochs=0.5,
        val_fraction=0.1, patience=4, num_workers=1,
    )


PRESETS = {"fashion-mnist": fashion_mnist_full, "fashion-mnist-demo": fashion_mnist_demo, "photos": photos}
