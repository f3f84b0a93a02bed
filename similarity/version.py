"""The simsearch version, read from the installed package's metadata (``pyproject.toml`` is its one source)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version


def simsearch_version() -> str:
    """The installed distribution's version, e.g. ``"0.1.0"``; ``"unknown"`` for a source tree never installed."""
    try:
        return version("simsearch")
    except PackageNotFoundError:
        return "unknown"
