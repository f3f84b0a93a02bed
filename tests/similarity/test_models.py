"""Backbones build offline, outputs are normalised, freezing and pretrained weights work."""

from __future__ import annotations

import pytest
import torch

from similarity.config import ModelConfig
from similarity.models import EmbeddingNet, default_preprocess, efficientnet_lite0_weights_path


@pytest.mark.parametrize("backbone,size", [("smallcnn", 28), ("resnet18", 64), ("mobilenet_v3_small", 64),
                                           ("efficientnet_lite0", 64)])
def test_backbones_embed_to_unit_vectors(backbone, size):
    config = ModelConfig(backbone=backbone, embedding_dim=32, pretrained=False)
    model = EmbeddingNet(config, default_preprocess(config, size)).eval()
    channels = 1 if backbone == "smallcnn" else 3
    with torch.inference_mode():
        out = model(torch.randn(3, channels, size, size))
    assert out.shape == (3, 32)
    assert torch.allclose(out.norm(dim=1), torch.ones(3), atol=1e-5)


def test_efficientnet_imagenet_weights_load_offline():
    state = torch.load(efficientnet_lite0_weights_path(), map_location="cpu", weights_only=True)
    config = ModelConfig(backbone="efficientnet_lite0", pretrained=True)
    model = EmbeddingNet(config, default_preprocess(config, 64))
    stem = model.backbone.net._conv_stem.weight
    assert torch.equal(stem, state["_conv_stem.weight"])


def test_trainable_blocks_freeze_the_rest_and_their_batchnorm():
    config = ModelConfig(backbone="efficientnet_lite0", pretrained=False, trainable_blocks=2)
    model = EmbeddingNet(config, default_preprocess(config, 64)).train()
    trainable = {id(p) for block in model.blocks[-2:] for p in block.parameters()}
    for p in model.backbone.parameters():
        assert p.requires_grad == (id(p) in trainable)
    assert all(p.requires_grad for p in model.head.parameters())
    frozen_bn = [m for m in model.blocks[0].modules() if isinstance(m, torch.nn.BatchNorm2d)]
    live_bn = [m for m in model.blocks[-1].modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert frozen_bn and not any(m.training for m in frozen_bn)
    assert live_bn and all(m.training for m in live_bn)
    model.set_trainable_blocks(0)
    assert not model.backbone_parameters()
    model.set_trainable_blocks(-1)
    assert len(model.backbone_parameters()) == len(list(model.backbone.parameters()))


def test_grayscale_input_refused_for_imagenet_backbones():
    from similarity.config import PreprocessSpec

    with pytest.raises(ValueError, match="3-channel"):
        EmbeddingNet(ModelConfig(backbone="resnet18", pretrained=False), PreprocessSpec(image_size=32))
