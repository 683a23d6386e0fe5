"""SFT: the assistant mask, data errors, packing, learning and resume, on a micro model."""

import json
import random
import shutil

import pytest
import torch

from rlvr.engine import TorchEngine
from rlvr.envs import make_env
from rlvr.eval import eval_problems, evaluate
from rlvr.models import build_tiny_model, load_model, save_model
from rlvr.models.forward import parts_of
from rlvr.train import sft
from rlvr.train.corpus import worked_addition
from rlvr.run import last_model
from rlvr.types import Sampling

ENV = {"name": "arithmetic", "digits": 1, "ops": ["add"], "template": "{expr}"}


def _metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _write(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def random_micro(path, seed=0):
    model, tok = build_tiny_model("micro", seed=seed)
    return save_model(model, tok, path)


def worked_data(path):
    """200 worked 1-digit additions from the train split, with extra keys that are ignored."""
    env, rng = make_env(ENV), random.Random(0)
    rows = []
    for _, p in zip(range(200), env.problems("train", 0)):
        reply = worked_addition(p.meta["a"], p.meta["b"], 0.0, rng)
        rows.append({"messages": p.messages() + [{"role": "assistant", "content": reply}], "provenance": "test"})
    return _write(path, rows)


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    return random_micro(tmp_path_factory.mktemp("micro") / "model")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return worked_data(tmp_path_factory.mktemp("data") / "add.jsonl")


def test_mask_covers_assistant_content_and_end_token():
    _, tok = build_tiny_model("micro")
    msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "1+2"},
            {"role": "assistant", "content": "#### 3"}, {"role": "user", "content": "and 2+2?"},
            {"role": "assistant", "content": "#### 4"}]
    ex = sft.encode(tok, msgs)
    assert len(ex.ids) == len(ex.mask)
    masked = tok.decode([i for i, m in zip(ex.ids, ex.mask) if m])
    assert masked == "#### 3<|end|>#### 4<|end|>"
    # Each masked span is contiguous and is exactly one assistant turn.
    spans = "".join("x" if m else "." for m in ex.mask).split(".")
    assert [len(s) for s in spans if s] == [7, 7]  # "#### 3" + <|end|>, twice


def test_bad_lines_name_file_and_line(tmp_path):
    _, tok = build_tiny_model("micro")
    good = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    cases = {
        "{not json": "not valid JSON",
        json.dumps({"msgs": []}): '"messages"',
        json.dumps({"messages": [{"role": "robot", "content": "x"}]}): "role",
        json.dumps({"messages": [{"role": "user", "content": "only a question"}]}): "no assistant turn",
        json.dumps({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a" * 80}]}):
            "max_length",
    }
    for bad, why in cases.items():
        path = _write(tmp_path / "bad.jsonl", [good, "", bad])
        with pytest.raises(ValueError, match=rf"bad\.jsonl:3: .*{why}"):
            sft.load_conversations(path, tok, max_length=64)
    assert len(sft.load_conversations(_write(tmp_path / "ok.jsonl", [good, good]), tok, 64)) == 2


def test_packed_loss_equals_unpacked_and_hf(micro, data):
    model, tok = load_model(micro, device="cpu")
    examples = sft.load_conversations(data, tok, 64)[:40]
    parts = parts_of(model.eval())
    with torch.no_grad():
        sums = {}
        for pack in (False, True):
            rows = sft.make_rows(examples, pack, 64, seed=0)
            assert (len(rows) < len(examples)) == pack
            total, n = sft.loss_sum(parts, sft.collate(rows, tok.pad_token_id, "cpu"))
            sums[pack] = (float(total) / n, n)
        # Unpacked rows through HF's own forward give the same loss.
        batch = sft.collate([[ex] for ex in examples], tok.pad_token_id, "cpu")
        labels = batch["ids"].masked_fill(~batch["mask"], -100)
        hf = model(input_ids=batch["ids"], attention_mask=(batch["seg"] > 0).long(), labels=labels).loss
    assert sums[True][1] == sums[False][1]
    assert abs(sums[True][0] - sums[False][0]) < 1e-5
    assert abs(sums[False][0] - float(hf)) < 1e-5


def test_micro_batches_by_tokens_give_the_steps_gradient(micro, data):
    """A step cut into micro-batches of a few rows' tokens (sorted by length) has the gradient
    and the loss of the whole step in one forward; every row goes into exactly one."""
    model, tok = load_model(micro, device="cpu")
    examples = sft.load_conversations(data, tok, 64)[:24]
    rows = sft.make_rows(examples, False, 64, seed=0)
    lengths = [sum(len(ex.ids) for ex in row) for row in rows]
    parts = parts_of(model)
    grads, losses = {}, {}
    for cap in (None, 3 * max(lengths)):
        model.zero_grad(set_to_none=True)
        loss, n, seen, micro_batches = sft.train_rows(parts, rows, tok.pad_token_id, "cpu", cap)
        grads[cap] = torch.cat([p.grad.flatten() for p in model.parameters()])
        losses[cap] = (loss, n, seen, micro_batches)
        plan = sft.plan_rows(lengths, cap)
        assert sorted(i for idx in plan for i in idx) == list(range(len(rows)))
        assert cap is None or all(len(idx) * max(lengths[i] for i in idx) <= cap for idx in plan)
    assert losses[None][3] == 1 and losses[3 * max(lengths)][3] >= len(rows) // 3
    assert losses[None][1:3] == losses[3 * max(lengths)][1:3] == (n, sum(lengths))
    assert abs(losses[None][0] - losses[3 * max(lengths)][0]) < 1e-5
    torch.testing.assert_close(grads[None], grads[3 * max(lengths)], rtol=1e-4, atol=1e-6)


def test_plan_rows_sorts_only_when_it_must_split():
    from rlvr.train.batch import plan_rows

    assert plan_rows([5, 9, 3], None) == [[0, 1, 2]]
    assert plan_rows([5, 9, 3], 27) == [[0, 1, 2]]  # fits: one micro-batch, the rows' own order
    # 20 tokens: two micro-batches either way; [9] and [5, 3] pad less than [9, 5] and [3].
    assert plan_rows([5, 9, 3], 20) == [[1], [0, 2]]
    assert plan_rows([5, 9, 3], 8) == [[1], [0], [2]]  # a row longer than the cap goes alone


def _greedy(model_dir):
    model, tok = load_model(model_dir, device="cpu")
    env = make_env(ENV)
    r = evaluate(TorchEngine(model, tok), env, eval_problems(env, 50), 1, [1],
                 Sampling(temperature=0.0, max_new_tokens=16), greedy=False)
    return r["arithmetic"]["pass@1"]["mean"]


def _cfg(micro, data, run_dir, **kw):
    cfg = dict(run_dir=str(run_dir), model=str(micro), data=str(data), epochs=40, batch_size=8, lr=3e-3,
               warmup=5, max_length=64, pack=True, eval_env=ENV, eval_every=0, eval_problems=50,
               eval_max_new_tokens=16, eval_temperature=0.0, seed=0)
    return sft.SFTConfig(**{**cfg, **kw})


@pytest.mark.learning
def test_sft_lowers_loss_and_raises_accuracy(micro, data, tmp_path):
    before = _greedy(micro)
    run = sft.main(_cfg(micro, data, tmp_path / "sft", eval_every=120))
    after = _greedy(last_model(run.dir))
    # scripts/learning_margins.py, 5 model seeds x 2 data-order seeds on each kernel path (native =
    # AVX2 on the machine measured, and ATEN_CPU_CAPABILITY=default): +0.20 to +0.92 (this seed: +0.48
    # native, +0.38 default); 20 of 20 pass at +0.1. Held-out problems: it learned to add, not the data.
    assert after > before + 0.1, (before, after)
    m = _metrics(run.dir)
    assert m[0]["step"] == 0 and "loss" not in m[0]  # the evaluation before training
    assert m[-1]["loss"] < 0.3 * m[1]["loss"], (m[1]["loss"], m[-1]["loss"])
    for key in ("loss", "trained_tokens", "tokens_per_s", "step_time", "lr", "grad_norm"):
        assert key in m[-1]
    assert [r["step"] for r in m if "eval/arithmetic" in r] == [0, 120, 240, 360]
    assert m[-1]["eval/arithmetic"] == pytest.approx(after)
    assert json.loads((run.dir / "eval.json").read_text())["metrics"]["arithmetic"]["pass@1"]["mean"] == after


def test_resume_after_losing_the_last_checkpoint(micro, data, tmp_path):
    run_dir = tmp_path / "sft"
    sft.main(_cfg(micro, data, run_dir, epochs=1, max_steps=9, save_every=3, keep_last=5, eval_env=None, pack=False))
    ckpts = sorted((run_dir / "checkpoints").glob("step_*"), key=lambda p: int(p.name.split("_")[1]))
    assert [p.name for p in ckpts] == ["step_3", "step_6", "step_9"]
    full = _metrics(run_dir)
    shutil.rmtree(ckpts[-1])  # killed before the final save landed
    sft.main(_cfg(micro, data, run_dir, epochs=1, max_steps=9, save_every=3, keep_last=5, eval_env=None, pack=False,
                      resume=True))
    m = _metrics(run_dir)
    assert [r["step"] for r in m] == list(range(1, 10))
    # The resumed steps read the same batches as before (same data order); the first one's
    # loss is of the same weights. (Only the newest checkpoint keeps the optimizer state,
    # so from step_6 Adam's moments restart: later losses differ a little.)
    for a, b in zip(full[6:], m[6:]):
        assert a["trained_tokens"] == b["trained_tokens"]
    assert m[6]["loss"] == pytest.approx(full[6]["loss"], rel=1e-4)
