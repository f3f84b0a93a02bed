"""simsearch: metric-learning image similarity search (command line and pipeline)."""
__version__ = "0.1.0"
