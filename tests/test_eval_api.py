"""`rlvr eval --base_url`: a model behind an OpenAI-compatible endpoint, evaluated on rlvr's
own environments exactly as a local one is (same problems, verifiers, metrics), cached.
Multi-turn environments over an endpoint: tests/test_chat_rollout.py."""

from conftest import ENV, served
from rlvr import eval as evaluation
from rlvr.models import load_model
from rlvr.run import last_model
from rlvr.serve import ServeConfig, make_app


def test_an_endpoint_evaluates_as_the_local_model_does_and_a_rerun_asks_nothing(micro_base, tmp_path):
    model, tok = load_model(last_model(micro_base))
    common = dict(env=ENV, problems=8, samples=4, ks=[1, 4], max_new_tokens=24, seed=0)
    local = evaluation.main(evaluation.EvalConfig(model=str(micro_base), **common))["metrics"]
    app = make_app(model, tok, ServeConfig(model=str(micro_base), model_name="teacher"))
    with served(app) as url:
        cfg = evaluation.EvalConfig(model="teacher", base_url=f"{url}/v1", run_dir=str(tmp_path / "api"), **common)
        remote = evaluation.main(cfg)["metrics"]
        calls = app.state.batcher.calls
        again = evaluation.main(cfg)["metrics"]
        assert app.state.batcher.calls == calls  # every answer came from the cache
    name = ENV["name"]
    # Greedy decoding is the same model on the same prompts: the same answers, problem for problem.
    assert remote[name]["greedy"] == local[name]["greedy"]
    assert remote[name]["pass@1"]["per_problem"].keys() == local[name]["pass@1"]["per_problem"].keys()
    assert again == remote and 0.0 <= remote[name]["pass@1"]["mean"] <= 1.0
    assert any((tmp_path / "api" / "api_cache").rglob("*.json"))
