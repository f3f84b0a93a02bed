"""Typed inputs and settings of the report: :class:`ReportConfig`, :class:`EmbeddingSet`, :class:`ReportResult`.

Entry points (CLI, notebook, bench) build these objects; the report modules only read them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from similarity.hygiene import DuplicateRule

HTML_FILE = "report.html"
JSON_FILE = "report.json"
NO_LABEL_NAME = "(no label)"  # the class name the report gives items without a label
# why a report on images without labels has no class metrics (shown in the report, kept in report.json)
UNLABELLED_NOTE = ("The images have no labels, so there is no class to predict: the report has no kNN accuracy, "
                   "retrieval precision, per-class table, confusion matrix or cluster quality. It shows the map of "
                   "the embeddings and the duplicate groups.")


@dataclass(frozen=True)
class ReportConfig:
    """Sizes, seeds and limits of one report. Every sample is drawn with ``seed``, so reports are reproducible."""

    k: int = 10  # neighbors in the kNN majority vote
    recall_at: tuple[int, ...] = (1, 5, 10)  # recall@k: share of queries with a same-class item in the top k
    seed: int = 0
    tsne_sample: int = 5000  # points in the t-SNE (a seeded random sample when the set is larger)
    tsne_perplexity: float = 30.0  # lowered automatically for tiny samples
    tsne_max_iter: int = 1000
    pca_dims: int = 50  # PCA before t-SNE, for speed
    silhouette_sample: int = 10000  # silhouette is O(n^2): computed on a seeded sample
    kmeans_sample: int = 50000  # k-means / Davies-Bouldin sample
    examples: int = 12  # random example queries in the neighbor grid
    failures: int = 8  # worst failures (neighbors mostly wrong) in the neighbor grid
    neighbors_shown: int = 8  # neighbors per row of the grid
    confused_pairs: int = 10  # most confused (true, predicted) class pairs listed
    thumbnail_size: int = 64  # pixels, longest side
    hover_thumbnails: int = 2000  # t-SNE points that get a hover thumbnail (HTML size stays bounded)
    chunk_elements: int = 1 << 25  # query x gallery similarities held at once (128 MiB of float32)
    threads: int = 1  # BLAS/OpenMP threads while building (spinning OpenMP threads crawl on busy shared cores)
    hygiene: bool = True  # search the gallery for duplicate groups (the index's own ANN search; leakage is always on)
    hygiene_sample: int = 10000  # gallery items whose neighbours the duplicate search visits (a seeded sample)
    # what counts as a duplicate in the data-hygiene section; None: the index's rule (engine.duplicate_rule.rule_for),
    # DuplicateRule() for a report built from arrays alone
    duplicates: DuplicateRule | None = None
    hygiene_shown: int = 24  # leaked queries and mixed-label groups shown with thumbnails, each

    def __post_init__(self) -> None:
        for name in ("k", "tsne_sample", "hygiene_sample", "tsne_max_iter", "pca_dims", "silhouette_sample", "kmeans_sample",
                     "neighbors_shown", "thumbnail_size", "chunk_elements", "threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("examples", "failures", "confused_pairs", "hover_thumbnails", "hygiene_shown"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.tsne_perplexity <= 0:
            raise ValueError(f"tsne_perplexity must be > 0, got {self.tsne_perplexity}")
        recall_at = tuple(int(r) for r in self.recall_at)
        if not recall_at or min(recall_at) < 1:
            raise ValueError(f"recall_at needs positive ranks, got {self.recall_at}")
        object.__setattr__(self, "recall_at", tuple(sorted(set(recall_at))))

    @property
    def neighbors_kept(self) -> int:
        """Neighbors kept per query: enough for the vote, recall@k and the example grid."""
        return max(self.k, self.neighbors_shown, max(self.recall_at))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class EmbeddingSet:
    """Embeddings with their labels, and optionally the image files they came from.

    embeddings: (n, d) float32, L2-normalised rows. labels: (n,) int64 indices into ``class_names``.
    paths: n image files (thumbnails), or None. ids: (n,) identifiers shown next to the paths, or None.
    """

    embeddings: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    paths: list[str] | None = None
    ids: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.embeddings = np.ascontiguousarray(self.embeddings, dtype=np.float32)
        self.labels = np.asarray(self.labels).astype(np.int64, copy=False)
        self.class_names = [str(name) for name in self.class_names]
        if self.embeddings.ndim != 2 or len(self.embeddings) == 0:
            raise ValueError(f"embeddings must be a non-empty (n, d) array, got shape {self.embeddings.shape}")
        n = len(self.embeddings)
        if self.labels.shape != (n,):
            raise ValueError(f"labels must have shape ({n},), got {self.labels.shape}")
        if not self.class_names:
            raise ValueError("class_names is empty")
        if self.labels.min() < 0 or self.labels.max() >= len(self.class_names):
            raise ValueError(f"labels must lie in [0, {len(self.class_names)}), got "
                             f"[{self.labels.min()}, {self.labels.max()}]")
        if not np.isfinite(self.embeddings).all():
            raise ValueError("embeddings contain NaN or infinite values")
        norms = np.linalg.norm(self.embeddings, axis=1)
        if not np.allclose(norms, 1.0, atol=1e-3):
            raise ValueError(f"embeddings must be L2-normalised, got norms in [{norms.min():.4f}, {norms.max():.4f}]")
        if self.paths is not None:
            self.paths = [str(p) for p in self.paths]
            if len(self.paths) != n:
                raise ValueError(f"paths has {len(self.paths)} entries for {n} embeddings")
        if self.ids is not None:
            self.ids = np.asarray(self.ids)
            if len(self.ids) != n:
                raise ValueError(f"ids has {len(self.ids)} entries for {n} embeddings")

    def __len__(self) -> int:
        return len(self.embeddings)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def name_of(self, index: int) -> str:
        """A short name for row ``index``: its id, else its file name, else ``#index``."""
        if self.ids is not None:
            return str(self.ids[index])
        if self.paths is not None:
            return Path(self.paths[index]).name
        return f"#{index}"


@dataclass(frozen=True)
class ReportResult:
    """What :func:`report.build.build_report` wrote: file paths and every number (also in ``json_path``)."""

    html_path: Path
    json_path: Path
    figures: dict[str, Path] = field(default_factory=dict)  # figure name -> PNG file
    metrics: dict[str, Any] = field(default_factory=dict)
