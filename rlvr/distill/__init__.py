"""Distillation: teachers that write worked solutions, and `serve`, which makes any rlvr or
Hugging Face checkpoint an OpenAI-compatible teacher (or eval target) over HTTP.

    rlvr serve runs/sft-1 --port 8000
"""
