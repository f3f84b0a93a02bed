"""Imported once by the DataLoader fork server (:mod:`similarity.workers`), so that each worker forked from it
starts with this already done instead of doing it itself."""

from PIL import Image

import similarity.batches  # noqa: F401 - the training dataset and its transforms (imports torch)
import similarity.embedder  # noqa: F401 - the decoding dataset

Image.init()  # Pillow's format plugins: 0.3 s in every worker otherwise
