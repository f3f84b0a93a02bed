"""The search engine: an index directory together with the checkpoint it was built with.

Everything that turns images into answers lives here, once: opening an index with its model, building and
growing it, and the single search path (decode -> embed -> search -> vote).  The API, the CLI, the
notebook and the report call it; none of them repeats a step.
"""

from engine.build import (BuildSummary, add_images, build_index, check_index, checkpoint_for, copy_index, drop_index,
                          index_home, index_model_info, open_index)
from engine.engine import (DEFAULT_REQUEST_PIXELS, ORPHAN_GRACE_S, UPLOAD_FORMATS, Engine, PixelBudgetExceeded,
                           SearchResult, make_rng, mime_type, set_torch_threads)
from engine.layout import DEDUP_DIR, MODEL_FILE, REPORT_DIR, REPORT_HTML, UPLOADS_DIR

__all__ = ["BuildSummary", "DEFAULT_REQUEST_PIXELS", "Engine", "MODEL_FILE", "ORPHAN_GRACE_S", "PixelBudgetExceeded",
           "REPORT_DIR", "REPORT_HTML", "SearchResult", "UPLOADS_DIR", "UPLOAD_FORMATS", "add_images", "build_index",
           "check_index", "checkpoint_for", "copy_index", "drop_index", "index_home", "index_model_info", "make_rng", "mime_type", "open_index", "set_torch_threads"]

# the index's public types, so that the API and the CLI import from the engine only
from index import (INDEX_TYPES, IndexBusyError, IndexConfig, IndexMismatchError, IndexUnavailableError,  # noqa: E402
                   ItemMeta, Neighbor, Vote)
from index.location import is_milvus, is_milvus_lite  # noqa: E402
from index.migrate import migrate_legacy as migrate_index  # noqa: E402
from similarity.data import LabelledImages, load_labelled_images  # noqa: E402

__all__ += ["INDEX_TYPES", "IndexBusyError", "IndexConfig", "IndexMismatchError", "IndexUnavailableError", "ItemMeta",
            "is_milvus", "is_milvus_lite", "LabelledImages",
            "Neighbor", "Vote", "load_labelled_images", "migrate_index"]

# what the CLI needs from the layers below, so that it imports from the engine only
from index import IndexStoreError  # noqa: E402
from similarity.checkpoint import CheckpointError  # noqa: E402
from similarity.data import DatasetError, fashion_mnist_folder  # noqa: E402
from similarity.imageio import ImageDecodeError  # noqa: E402
from similarity.version import simsearch_version  # noqa: E402

__all__ += ["CheckpointError", "DatasetError", "ImageDecodeError", "IndexStoreError", "fashion_mnist_folder",
            "simsearch_version"]

# duplicates inside an index (simsearch index dedup)
from engine.dedup import DEFAULT_NEIGHBOURS, DuplicateGroup, DuplicateReport, write_duplicates  # noqa: E402
from similarity.hygiene import DuplicateRule  # noqa: E402

__all__ += ["DEDUP_DIR", "DEFAULT_NEIGHBOURS", "DuplicateGroup", "DuplicateReport", "DuplicateRule",
            "write_duplicates"]

# duplicates at ingestion (the --duplicates / ?duplicates= policy)
from engine.ingestion import DEFAULT_POLICY, DUPLICATE_POLICIES, AddResult, DuplicateCounts  # noqa: E402

__all__ += ["AddResult", "DEFAULT_POLICY", "DUPLICATE_POLICIES", "DuplicateCounts"]

# the one thumbnail scaling, shared by the API and the report
from similarity.imageio import scale_to_fit  # noqa: E402

__all__ += ["scale_to_fit"]

# what runs the model: torch or ONNX Runtime (``simsearch export`` itself lives in engine.export, which imports
# onnxruntime: importing the engine does not)
from similarity.onnx_format import DEFAULT_CALIBRATION_SIZE, OnnxExportError, OnnxModelError  # noqa: E402
from similarity.runtime import CLI_DEFAULT_RUNTIME, DEFAULT_RUNTIME, RUNTIMES, EmbedRuntime  # noqa: E402

__all__ += ["CLI_DEFAULT_RUNTIME", "DEFAULT_CALIBRATION_SIZE", "DEFAULT_RUNTIME", "EmbedRuntime", "OnnxExportError", "OnnxModelError", "RUNTIMES"]
