"""The training API as the command line sees it: recipes, config choices, data loaders and :func:`train`.

Re-exports only; the definitions live in :mod:`similarity`, which knows nothing of the engine.
"""

from similarity.checkpoint import CHECKPOINT_FILE
from similarity.config import BACKBONES, LOSSES, SAMPLERS, TrainConfig, default_sampler, with_overrides
from similarity.data import LabelledImages, find_fashion_mnist, load_fashion_mnist, load_labelled_images
from similarity.models import default_preprocess
from similarity.presets import PRESETS
from similarity.train import TrainResult, train

__all__ = ["BACKBONES", "CHECKPOINT_FILE", "LOSSES", "PRESETS", "SAMPLERS", "LabelledImages", "TrainConfig",
           "TrainResult", "default_preprocess", "default_sampler", "find_fashion_mnist", "load_fashion_mnist",
           "load_labelled_images", "train", "with_overrides"]
