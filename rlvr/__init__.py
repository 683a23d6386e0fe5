"""rlvr: post-training reasoning language models on verifiable rewards."""

__version__ = "0.1.0"
