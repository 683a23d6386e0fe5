"""`rlvr serve MODEL`: any rlvr or Hugging Face checkpoint as an OpenAI-compatible HTTP server.

Every OpenAI client (the `openai` SDK, eval harnesses, `rlvr distill`'s teacher client)
can then talk to a local model: a teacher to distill from, or a trained model to
evaluate with someone else's harness. The server is its own package, beside
`rlvr/distill/` rather than inside it, because distillation is one of its clients.

    app.py       the config, the routes and `main`
    batcher.py   the engine thread: concurrent requests become shared `generate` calls
    schema.py    the OpenAI wire format: errors, request bodies, a completion as JSON
    stream.py    a streamed response: one chunk per token, for chat and text completions alike
    guard.py     the API key and the body-size limit, checked before a body is parsed

    rlvr serve runs/sft-1 --port 8000
"""

from rlvr.serve.app import ServeConfig, main, make_app

__all__ = ["ServeConfig", "main", "make_app"]
