"""Reports on embeddings: retrieval and kNN quality, cluster quality, t-SNE, one self-contained HTML page."""

from report.build import build_report
from report.config import EmbeddingSet, ReportConfig, ReportResult

__all__ = ["EmbeddingSet", "ReportConfig", "ReportResult", "build_report"]
