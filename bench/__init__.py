"""Benchmarks (one script per figure) and the reliability harness; not part of the installed product."""

import os

# The repository root: bench/ sits directly under it.  Servers and workers started by the harness run here
# with it on PYTHONPATH, and results default to bench/results/ below it.
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# the index `bash scripts/demo.sh` builds: the 60k Fashion-MNIST training images with the demo model
DEMO_INDEX = os.path.join(REPO, "runs", "demo", "index")


def copy_index(source: str, target: str) -> str:
    """A private copy of an index directory for a benchmark to write (its uploads stay behind:
    items keep pointing at the source's files, which are never written)."""
    import shutil

    shutil.copytree(source, target, ignore=shutil.ignore_patterns("uploads", ".lock"))
    return target
