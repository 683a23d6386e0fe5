"""LoRA, the chunked LM head and activation checkpointing: same numbers as the plain path."""

import os

import pytest
import torch

from rlvr.config import InputError
from rlvr.models.forward import forward, parts_of
from rlvr.models.lm_head import head_logprobs, token_logprobs
from rlvr.models.lora import DEFAULT_TARGETS, add_lora, dense_weight, is_lora
from rlvr.models.tiny import build_tiny_model


def _plain(h, w, ids, temperature):
    logp_all = torch.log_softmax((h @ w.T) / temperature, -1)
    return logp_all.gather(-1, ids[..., None]).squeeze(-1), -(logp_all.exp() * logp_all).sum(-1)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_chunked_head_equals_full_logits_values_and_gradients(temperature):
    torch.manual_seed(0)
    h = torch.randn(3, 11, 16, dtype=torch.float64, requires_grad=True)
    w = torch.randn(50, 16, dtype=torch.float64, requires_grad=True)
    ids = torch.randint(0, 50, (3, 11))
    g = torch.randn(3, 11, dtype=torch.float64)
    logp, ent = token_logprobs(h, w, ids, temperature, rows=7)  # 33 tokens in chunks of 7
    (logp * g).sum().backward()
    gh, gw = h.grad.clone(), w.grad.clone()
    h.grad = w.grad = None
    ref, ref_ent = _plain(h, w, ids, temperature)
    (ref * g).sum().backward()
    assert torch.allclose(logp, ref) and torch.allclose(ent, ref_ent)
    assert torch.allclose(gh, h.grad) and torch.allclose(gw, w.grad)
    assert torch.autograd.gradcheck(lambda a, b: token_logprobs(a, b, ids[:1, :4], temperature, rows=3)[0],
                                    (h.detach()[:1, :4].clone().requires_grad_(), w.detach().clone().requires_grad_()))


def test_head_logprobs_chunks_only_a_large_vocabulary():
    torch.manual_seed(0)
    head = torch.nn.Linear(8, 70_000, bias=False)
    h, ids = torch.randn(2, 300, 8), torch.randint(0, 70_000, (2, 300))
    logp, _ = head_logprobs(head, h, ids)  # 600 rows > one chunk's 239: chunked
    ref, _ = _plain(h, head.weight, ids, 1.0)
    assert torch.allclose(logp, ref, atol=1e-5)


def test_lora_starts_as_the_base_and_trains_only_adapters(tmp_path):
    model, _ = build_tiny_model(seed=0)
    ids = torch.randint(0, 50, (2, 9))
    pos = torch.arange(9).expand(2, 9)
    before, _ = forward(parts_of(model), ids, pos)
    lora = add_lora(model, r=4, alpha=8, targets=DEFAULT_TARGETS, base=str(tmp_path))
    assert is_lora(lora)
    after, _ = forward(parts_of(lora), ids, pos)
    assert torch.equal(before, after)  # B = 0 at the start
    trainable = {n for n, p in lora.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)


def test_lora_targets_that_do_not_exist_are_refused(tmp_path):
    model, _ = build_tiny_model(seed=0)
    with pytest.raises(InputError, match="c_attn.*q_proj"):
        add_lora(model, r=4, alpha=8, targets=["c_attn"], base=str(tmp_path))


def test_packed_engine_weights_include_the_adapters(tmp_path):
    model, _ = build_tiny_model(seed=0)
    lora = add_lora(model, r=4, alpha=8, targets=["q_proj"], base=str(tmp_path))
    layer = lora.get_base_model().model.layers[0].self_attn.q_proj
    with torch.no_grad():
        layer.lora_B["default"].weight.normal_()
    x = torch.randn(3, layer.in_features)
    assert torch.allclose(x @ dense_weight(layer).T, layer(x), atol=1e-5)
    assert not torch.allclose(dense_weight(layer), layer.get_base_layer().weight)


def test_activation_checkpointing_gives_the_same_gradients():
    model, _ = build_tiny_model(seed=0)
    ids = torch.randint(0, 50, (2, 9))
    pos = torch.arange(9).expand(2, 9)
    grads = []
    for ckpt in (False, True):
        model.zero_grad()
        h, _ = forward(parts_of(model, checkpoint=ckpt), ids, pos)
        h.square().sum().backward()
        grads.append([p.grad.clone() for p in model.parameters() if p.grad is not None])
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(*grads))


# -- trainers under LoRA ------------------------------------------------------------------
import json  # noqa: E402

from conftest import ENV  # noqa: E402

from rlvr.engine import TorchEngine  # noqa: E402
from rlvr.models import load_model  # noqa: E402
from rlvr.run import last_model  # noqa: E402
from rlvr.train import rl  # noqa: E402
from rlvr.types import Sampling  # noqa: E402


def _rl(base, run_dir, **kw):
    cfg = dict(run_dir=str(run_dir), model=str(base), env=ENV, steps=3, prompts=8, group_size=4,
               max_new_tokens=16, lr=5e-3, warmup=0, eval_problems=8, eval_samples=2, save_every=2, seed=0,
               lora_r=4, lora_targets=["q_proj", "v_proj", "up_proj"])
    return rl.RLConfig(**{**cfg, **kw})


def test_rl_with_lora_saves_an_adapter_that_loads_merged_and_resumes(micro_base, tmp_path):
    run = rl.main(_rl(micro_base, tmp_path / "rl"))
    ckpt = last_model(run.dir)
    assert (ckpt / "adapter_config.json").exists() and not (ckpt / "model.safetensors").exists()
    assert json.loads((ckpt / "adapter_config.json").read_text())["base_model_name_or_path"] == \
        str(last_model(micro_base).resolve())
    assert not (run.dir / "checkpoints" / "step_2" / "optimizer.pt").exists()  # only the newest keeps it
    assert (run.dir / "checkpoints" / "step_3" / "optimizer.pt").exists()
    merged, tok = load_model(ckpt)  # a plain model: base + adapter
    base, _ = load_model(last_model(micro_base))
    assert not hasattr(merged, "peft_config")
    changed = [k for k, v in merged.state_dict().items() if not torch.equal(v, base.state_dict()[k])]
    assert changed and all(any(t in k for t in ("q_proj", "v_proj", "up_proj")) for k in changed)
    # The run continues from its adapter: two more steps, the same adapter trained on.
    rl.main(_rl(micro_base, tmp_path / "rl", steps=5, resume=True))
    steps = [json.loads(line)["step"] for line in (run.dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5]


def test_rl_with_lora_and_kl_uses_the_base_as_reference(micro_base, tmp_path):
    run = rl.main(_rl(micro_base, tmp_path / "rl", kl_coef=0.1, steps=2, save_every=0, eval_problems=0))
    m = [json.loads(line) for line in (run.dir / "metrics.jsonl").read_text().splitlines()]
    assert m[0]["kl"] == pytest.approx(0.0, abs=1e-6)  # adapters start at B = 0: the policy is the base
    assert m[1]["kl"] > 0


def test_a_shared_engine_samples_what_an_engine_with_its_own_copy_does(micro_base):
    model, tok = load_model(last_model(micro_base))
    prompts = [tok("1+2=", add_special_tokens=False)["input_ids"]] * 3
    sampling = Sampling(temperature=1.0, max_new_tokens=8, seed=3)
    own = TorchEngine(model, tok).generate(prompts, 4, sampling)
    shared = TorchEngine(model, tok, share=True).generate(prompts, 4, sampling)
    assert [[s.completion_ids for s in g] for g in own] == [[s.completion_ids for s in g] for g in shared]


def test_low_precision_weights_train_through_fp32_master_copies():
    """bf16 weights (the GPU default): AdamW keeps fp32 copies and fp32 moments, so a step
    too small for bf16 to resolve still accumulates; the model stays bf16."""
    from rlvr.train.setup import MasterWeights, make_optimizer

    model = torch.nn.Linear(4, 4, bias=False).to(torch.bfloat16)
    with torch.no_grad():
        model.weight.fill_(1.0)
    opt = make_optimizer(model, lr=1e-4, betas=(0.9, 0.99))
    assert isinstance(opt, MasterWeights)
    for _ in range(20):  # each step moves a weight by ~1e-4, below bf16's spacing of 2**-7 at 1.0
        model(torch.ones(2, 4, dtype=torch.bfloat16)).sum().backward()
        opt.step()
        opt.zero_grad()
    master = opt.master[0]
    assert master.dtype == torch.float32 and model.weight.dtype == torch.bfloat16
    assert master.max().item() == pytest.approx(1.0 - 20 * 1e-4, rel=1e-3)  # every step kept
    state = opt.state_dict()["state"][0]
    assert state["exp_avg"].dtype == torch.float32 and state["exp_avg_sq"].dtype == torch.float32
    plain = torch.nn.Linear(4, 4, bias=False).to(torch.bfloat16)
    with torch.no_grad():
        plain.weight.fill_(1.0)
    naive = torch.optim.AdamW(plain.parameters(), lr=1e-4, betas=(0.9, 0.99))
    for _ in range(20):
        plain(torch.ones(2, 4, dtype=torch.bfloat16)).sum().backward()
        naive.step()
        naive.zero_grad()
    assert torch.all(plain.weight == 1.0)  # the same steps taken in bf16 are lost
    assert isinstance(make_optimizer(torch.nn.Linear(2, 2), lr=1e-3), torch.optim.AdamW)


def test_rl_in_bfloat16_trains_and_resumes(micro_base, tmp_path):
    run = rl.main(_rl(micro_base, tmp_path / "rl", lora_r=0, dtype="bfloat16", steps=2, eval_problems=0))
    ckpt = last_model(run.dir)
    trained, _ = load_model(ckpt, dtype=torch.bfloat16)
    base, _ = load_model(last_model(micro_base), dtype=torch.bfloat16)
    assert any(not torch.equal(v, base.state_dict()[k]) for k, v in trained.state_dict().items())
    rl.main(_rl(micro_base, tmp_path / "rl", lora_r=0, dtype="bfloat16", steps=3, eval_problems=0, resume=True))
    steps = [json.loads(line)["step"] for line in (run.dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]


def test_return_freed_memory_unmaps_freed_blocks():
    """glibc keeps a freed large block in its heap once it has raised its mmap threshold;
    with `return_freed_memory` (what --activation_checkpointing sets on CPU) it is unmapped."""
    import subprocess
    import sys

    code = """
import sys, torch
from rlvr.train.setup import return_freed_memory
if sys.argv[1] == "1":
    assert return_freed_memory()
def rss():
    return int(open('/proc/self/statm').read().split()[1]) * 4096
x = torch.ones(4 << 20); del x  # 16 MB, mapped on its own; freeing it raises glibc's threshold
base = rss()
y = torch.ones(15 << 18)  # 15 MB, from the heap now
ys = [torch.ones(1 << 17) for _ in range(30)]  # and 30 x 512 KiB, as a recomputed layer's
z = torch.ones(1000); del y, ys
print((rss() - base) / 2**20)
"""
    kept = {}
    for on in ("0", "1"):
        out = subprocess.run([sys.executable, "-c", code, on], capture_output=True, text=True, check=True,
                             env={**os.environ, "OMP_NUM_THREADS": "1"})
        kept[on] = float(out.stdout.split()[-1])
    assert kept["0"] > 20 and kept["1"] < 5, kept

