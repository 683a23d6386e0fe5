"""The engine seam (rlvr/engine/registry.py): `make_engine` and the `engine` config key pick a backend.

A fake backend, registered by one fixture the way a backend file registers itself, solves
every one-digit sum it is asked: an `rlvr eval` with `--engine fake` scores 100%, which the
micro model it is handed never would, so the evaluation ran through the backend the config
named, with its options. An unknown backend or option fails when the config is read, naming
the valid ones; the torch backend maps each role onto its own settings. Runs in seconds:

    .venv/bin/python -m pytest tests/test_engine_registry.py -q
"""

from __future__ import annotations

import re

import pytest
from pydantic import Field

from rlvr import cli
from rlvr.config import Config, ConfigError, InputError, load_config
from rlvr.engine import ENGINES, ROLES, TorchEngine, make_engine, register_engine
from rlvr.models import build_tiny_model, save_model
from rlvr.types import Engine, Sample

ENV = "{name: arithmetic, digits: 1, ops: [add], template: '{expr}'}"


class FakeOptions(Config):
    off_by: int = Field(0, description="Added to every answer (1: every answer is wrong).")


class FakeEngine:
    """Answers "a+b" prompts with "#### a+b" (plus `off_by`), whatever the weights."""

    def __init__(self, tok, role: str, version: int, off_by: int):
        self.tok, self.role, self.version, self.off_by = tok, role, version, off_by
        self.calls = 0

    def generate(self, prompts, n, sampling):
        self.calls += 1
        out = []
        for ids in prompts:
            a, b = map(int, re.search(r"(\d+)\+(\d+)", self.tok.decode(ids, skip_special_tokens=True)).groups())
            text = f"#### {a + b + self.off_by}"
            completion = self.tok(text, add_special_tokens=False).input_ids + [self.tok.eos_token_id]
            out.append([Sample(problem=None, prompt_ids=list(ids), completion_ids=completion,
                               logprobs=[0.0] * len(completion), policy_version=self.version,
                               finish_reason="stop", text=text) for _ in range(n)])
        return out

    def sync_weights(self, state, version, partial=False):
        self.version = version


@pytest.fixture
def fake():
    """Backend "fake", registered for one test; `built` holds the engines it made."""
    built: list[FakeEngine] = []

    def build(model, tok, *, role, version, max_batch, options: FakeOptions):
        built.append(FakeEngine(tok, role, version, options.off_by))
        return built[-1]

    register_engine("fake", build, FakeOptions)
    yield built
    del ENGINES["fake"]


@pytest.fixture(scope="module")
def micro():
    return build_tiny_model("micro", seed=0)


@pytest.fixture(scope="module")
def model_dir(micro, tmp_path_factory):
    path = tmp_path_factory.mktemp("micro")
    save_model(*micro, path)
    return path


def test_make_engine_builds_the_named_backend_for_the_role(fake, micro):
    model, tok = micro
    engine = make_engine(model, tok, "fake", role="snapshot", version=3, options={"off_by": 2})
    assert engine is fake[0] and isinstance(engine, Engine)
    assert (engine.role, engine.version, engine.off_by) == ("snapshot", 3, 2)


def test_eval_runs_through_the_engine_its_config_names(fake, model_dir):
    from rlvr.eval import EvalConfig, main

    args = [f"--model={model_dir}", f"--env={ENV}", "--problems=5", "--samples=2", "--ks=[1, 2]", "--engine=fake"]
    result = main(load_config(EvalConfig, overrides=args))["metrics"]["arithmetic"]
    assert result["pass@1"]["mean"] == 1.0 and result["greedy"]["mean"] == 1.0
    assert [(e.role, e.calls) for e in fake] == [("inference", 2)]  # sampled, then greedy

    wrong = main(load_config(EvalConfig, overrides=args + ["--engine_options={off_by: 1}"]))["metrics"]["arithmetic"]
    assert wrong["pass@1"]["mean"] == 0.0


def test_an_unknown_engine_fails_when_the_config_is_read():
    from rlvr.distill.distill import DistillConfig
    from rlvr.serve import ServeConfig
    from rlvr.eval import EvalConfig
    from rlvr.noise_audit import NoiseAuditConfig
    from rlvr.train.rl import RLConfig
    from rlvr.train.sft import SFTConfig

    for cls in (EvalConfig, RLConfig, SFTConfig, ServeConfig, DistillConfig, NoiseAuditConfig):
        with pytest.raises(ConfigError, match=r"key 'engine': .*unknown engine 'vllm': the engines are torch"):
            load_config(cls, overrides={"engine": "vllm", **({"model": "m"} if cls is ServeConfig else {})})
    with pytest.raises(InputError, match="unknown engine 'vllm': the engines are torch"):
        make_engine(None, None, "vllm", role="inference")


def test_the_cli_names_the_bad_engine_in_one_line(fake, capsys):
    assert cli.main(["eval", "--engine=vlm"]) == 2
    err = capsys.readouterr().err
    assert "unknown engine 'vlm': the engines are fake, torch" in err and "Traceback" not in err


def test_a_backend_checks_its_own_options(fake):
    from rlvr.eval import EvalConfig

    with pytest.raises(ConfigError, match=r"engine 'torch' has no option 'max_batc' \(its options: max_batch, kv_budget_gb, reuse_cache\)"):
        load_config(EvalConfig, overrides=["--engine_options={max_batc: 8}"])
    with pytest.raises(ConfigError, match=r"engine 'torch': option 'kv_budget_gb'"):
        load_config(EvalConfig, overrides=["--engine_options={kv_budget_gb: -1}"])
    with pytest.raises(ConfigError, match="engine 'fake' has no option 'max_batch'"):
        load_config(EvalConfig, overrides=["--engine=fake", "--engine_options={max_batch: 8}"])


def test_the_torch_backend_maps_roles_onto_its_settings(micro):
    model, tok = micro
    settings = {}
    for role in ROLES:
        engine = make_engine(model, tok, role=role, version=5)
        assert isinstance(engine, TorchEngine) and engine.version == 5
        settings[role] = (engine.model is model, engine.pack)
    assert settings == {"trainer": (True, None), "snapshot": (False, None), "inference": (True, True)}
    with pytest.raises(ValueError, match="unknown engine role 'eval'"):
        make_engine(model, tok, role="eval")


def test_torch_options_and_a_callers_cap(micro):
    model, tok = micro
    engine = make_engine(model, tok, role="inference", options={"kv_budget_gb": 2})
    assert (engine.max_batch, engine.kv_budget) == (1024, 2 * 2**30)
    assert make_engine(model, tok, role="inference", max_batch=256).max_batch == 256  # serve's --max_batch
    assert make_engine(model, tok, role="inference", max_batch=256, options={"max_batch": 64}).max_batch == 64
