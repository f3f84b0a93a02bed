"""The training API as the command line sees it: recipes, config choices, data loaders, :func:`train` and
:func:`tune`.

Re-exports only; the definitions live in :mod:`similarity`, which knows nothing of the engine.
"""

from similarity.checkpoint import CHECKPOINT_FILE
from similarity.config import (BACKBONES, LOSSES, PRECISIONS, SAMPLERS, TrainConfig, default_sampler, read_config,
                               with_overrides, write_config)
from similarity.data import LabelledImages, find_fashion_mnist, load_fashion_mnist, load_labelled_images
from similarity.embedder import resolve_device
from similarity.models import default_preprocess
from similarity.presets import PRESETS
from similarity.recipe import (DEFAULT_BUDGET_MINUTES, DataProfile, Recipe, choose_recipe, inspect_data,
                               measure_images_per_second, preprocess_for, recipe_for)
from similarity.train import TrainResult, train
from similarity.tune import TuneConfig, TuneError, TuneResult, tune

__all__ = ["BACKBONES", "CHECKPOINT_FILE", "DEFAULT_BUDGET_MINUTES", "DataProfile", "LOSSES", "PRECISIONS", "PRESETS",
           "Recipe", "SAMPLERS", "LabelledImages", "TrainConfig", "TrainResult", "TuneConfig", "TuneError",
           "TuneResult", "choose_recipe", "default_preprocess", "default_sampler", "find_fashion_mnist", "inspect_data",
           "load_fashion_mnist", "load_labelled_images", "measure_images_per_second", "preprocess_for", "read_config", "recipe_for",
           "resolve_device", "train", "tune", "with_overrides", "write_config"]
