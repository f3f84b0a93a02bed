"""Benchmarks (one script per figure) and the reliability harness; not part of the installed product."""

import os

# The repository root: bench/ sits directly under it.  Servers and workers started by the harness run here
# with it on PYTHONPATH, and results default to bench/results/ below it.
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
