"""lighteval-like: evaluate language models on standard benchmarks, fast and faithfully."""

__version__ = "0.1.0"
