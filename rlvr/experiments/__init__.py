"""Experiments that compare regimes on equal terms: `rlvr experiment NAME`."""
