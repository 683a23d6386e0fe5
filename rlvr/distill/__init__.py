"""Distillation: teachers that write worked solutions (`teacher.py`), and `rlvr distill`,
which keeps the verified ones as an SFT dataset (`distill.py`). A teacher is any
OpenAI-compatible endpoint or a local checkpoint; `rlvr serve` (rlvr/serve/) makes any
checkpoint such an endpoint.

    rlvr serve runs/teacher --port 8000 &
    rlvr distill --base_url http://127.0.0.1:8000/v1 --teacher teacher --env arithmetic --k 4
"""
