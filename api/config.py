"""``ApiConfig``: every setting of the web API in one typed, frozen dataclass (built at the entry point)."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, replace

from api.querylog import check_settings as check_query_log_settings
from similarity.runtime import DEFAULT_RUNTIME, EmbedRuntime

TOKEN_ENV = "SIMSEARCH_API_TOKEN"
INDEX_ENV = "SIMSEARCH_INDEX"


@dataclass(frozen=True)
class ApiConfig:
    """Settings of one API process.

    ``index`` names the index as ``--index`` does (an index directory, or a Milvus location such as
    ``milvus://HOST:PORT/COLLECTION``); its home holds ``model.pt``, and ``checkpoint`` overrides that model file.
    ``api_token`` enables the write endpoints (None: writes are refused with 403); it is kept out of
    ``repr`` so it never reaches a log line.
    """

    index: str
    checkpoint: str | None = None
    default_k: int = 10
    max_k: int = 100
    max_batch: int = 16
    max_upload_bytes: int = 16 * 2**20
    max_pixels: int = 40_000_000
    max_request_pixels: int = 100_000_000
    thumbnail_sizes: tuple[int, ...] = (64, 128, 256)
    thumbnail_cache_items: int = 2048
    max_random: int = 50
    unknown_below: float | None = None
    api_token: str | None = field(default=None, repr=False)
    cors_origins: tuple[str, ...] = ()
    random_seed: int | None = None
    torch_threads: int | None = None  # intra-op threads of the model runtime (torch, or the ONNX Runtime session)
    runtime: str = DEFAULT_RUNTIME  # torch | onnx | auto (see similarity.runtime.load_embedder)
    onnx_path: str | None = None  # the ONNX model to run (default: the cache beside the checkpoint)
    query_log: str | None = None  # folder of the query log (api.querylog); None: queries are not logged
    query_log_rate: float = 0.1  # share of the searched images logged (a seeded draw with random_seed)
    query_log_max_bytes: int = 100 * 2**20  # logging stops while the folder holds more than this

    def __post_init__(self) -> None:
        if not self.index:
            raise ValueError("index must name an index directory or a Milvus location")
        for name in ("default_k", "max_k", "max_batch", "max_upload_bytes", "max_pixels", "max_request_pixels",
                     "thumbnail_cache_items", "max_random"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.default_k > self.max_k:
            raise ValueError(f"default_k ({self.default_k}) must not exceed max_k ({self.max_k})")
        if not self.thumbnail_sizes or any(not isinstance(s, int) or not 8 <= s <= 1024
                                           for s in self.thumbnail_sizes):
            raise ValueError(f"thumbnail_sizes must be integers in [8, 1024], got {self.thumbnail_sizes!r}")
        if self.unknown_below is not None and not math.isfinite(self.unknown_below):
            raise ValueError(f"unknown_below must be finite, got {self.unknown_below!r}")
        if self.api_token is not None and len(self.api_token) < 8:
            raise ValueError("api_token must be at least 8 characters long")
        if self.torch_threads is not None and self.torch_threads < 1:
            raise ValueError(f"torch_threads must be >= 1, got {self.torch_threads!r}")
        EmbedRuntime(self.runtime, self.onnx_path, self.torch_threads)  # ValueError for a bad runtime
        if self.query_log is not None and not self.query_log:
            raise ValueError("query_log must name a folder, or be None")
        check_query_log_settings(self.query_log_rate, self.query_log_max_bytes)

    @property
    def embed_runtime(self) -> EmbedRuntime:
        """What runs the model in this process."""
        return EmbedRuntime(self.runtime, self.onnx_path, self.torch_threads)

    @property
    def writes_enabled(self) -> bool:
        return bool(self.api_token)

    @classmethod
    def from_env(cls, index: str | None = None, *, token_env: str = TOKEN_ENV, **overrides) -> "ApiConfig":
        """A config whose index comes from ``index`` or ``$SIMSEARCH_INDEX`` and whose token comes
        from the environment variable ``token_env`` (empty or unset: writes disabled)."""
        index = index or os.environ.get(INDEX_ENV)
        if not index:
            raise ValueError(f"no index: pass one or set ${INDEX_ENV}")
        token = os.environ.get(token_env) or None
        return cls(index=str(index), api_token=token, **overrides)

    def with_changes(self, **changes) -> "ApiConfig":
        return replace(self, **changes)
