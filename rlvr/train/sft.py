"""`rlvr sft`: supervised fine-tuning on chat conversations, loss on assistant tokens only.

The data is JSONL, one conversation a line: {"messages": [{"role", "content"}, ...]}
(what `rlvr distill` writes; other keys, such as provenance, are ignored). Each
conversation is tokenized with the model's own chat template, and the loss is the
mean cross-entropy over the tokens the assistant writes: its content and the
template's end-of-turn token, never the role header that precedes it.

The assistant tokens are found without knowing the template: the conversation is
rendered prefix by prefix, and an assistant turn owns the tokens that messages[:i+1]
adds after messages[:i] with the generation prompt. This assumes the template is
*prefix-stable* (rendering more messages never changes the tokens of earlier ones);
a template that is not (e.g. one that strips reasoning from earlier turns) is caught
and named rather than silently mis-masked. A conversation without an assistant turn,
or longer than `max_length`, is an error naming its file and line (truncating would
train on answers cut mid-way).

A multi-turn episode is one conversation (`rlvr distill` on a `tools:` or `guess`
environment): every assistant turn is learnt, the observations between them (user or
tool messages: a tool's `<result>`) are not. Its `tools` key says the first message
offers them in the tag format, as RL offers them to a model whose template has no tool
format; a model whose template has one is refused such rows (its RL prompts differ).

A row may also carry its own token ids, `input_ids` and `loss_mask` (1 on the tokens
to learn): they are trained on as given, and its messages are only for reading.
`rlvr rs` writes the ids its engine sampled this way: a decoded completion need not
re-tokenize to the ids the model wrote (BPE merges).

With `pack`, conversations are concatenated into rows of up to `max_length` tokens;
positions restart at each conversation and attention is block-diagonal (explicit
masks through rlvr.models.forward), so a packed batch gives exactly the loss of the
same conversations unpacked, with no padding to compute. A step's rows go forward and
backward in micro-batches that fit `--activation_gb` (sorted by length when they must be
split; `train_rows`), with the gradient of the whole step.

    rlvr sft --model runs/base --data distill.jsonl --epochs 2 --eval_env arithmetic
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from pydantic import Field

from rlvr.compute import Totals, inherited_from
from rlvr.config import InputError
from rlvr.envs.tool_calls import template_offers_tools
from rlvr.fields import GradClip, KeepLast, Resume, SaveEvery, StartModel, Warmup, WeightDecay
from rlvr.jsonl import read_jsonl
from rlvr.models.forward import forward
from rlvr.models.lm_head import chunked, token_logprobs
from rlvr.run import Run
from rlvr.train.batch import micro_batch_tokens, plan_rows
from rlvr.train.evaluator import Evaluator, TrainerFields
from rlvr.train.parallel import SINGLE, Parallel
from rlvr.train.schedule import Horizon
from rlvr.train.trainer import Trainer

ROLES = {"system", "user", "assistant", "tool"}


class SFTConfig(TrainerFields):
    run_dir: str = Field("runs/sft", description="Run directory (config, metrics, checkpoints, eval).")
    model: StartModel
    data: str = Field("data/sft.jsonl", description='JSONL, a line a conversation: {"messages": [{"role", "content"}, ...]}.')
    epochs: int = Field(1, ge=1, description="Passes over the data (ignored when max_steps > 0).")
    max_steps: int = Field(0, ge=0, description="Optimizer steps (0: epochs x rows / batch_size).")
    batch_size: int = Field(16, ge=1, description="Rows per step: conversations, or packed rows with `pack`.")
    lr: float = Field(1e-4, gt=0, description="Peak learning rate (AdamW), cosine-decayed to 10%.")
    warmup: Warmup = 10
    weight_decay: WeightDecay
    grad_clip: GradClip
    max_length: int = Field(1024, ge=2, description="Token limit of a conversation (and of a packed row).")
    pack: bool = Field(False, description="Pack conversations into rows of max_length with block-diagonal attention.")
    save_every: SaveEvery
    keep_last: KeepLast
    seed: int = Field(0, description="Seed of the data order.")
    resume: Resume


# -- data ------------------------------------------------------------------------------
@dataclass
class Example:
    ids: list[int]
    mask: list[bool]  # True on tokens the assistant writes (the loss is on these)


def _ids(tok, messages: list[dict], generation_prompt: bool = False) -> list[int]:
    out = tok.apply_chat_template(messages, tokenize=True, return_dict=True, add_generation_prompt=generation_prompt)
    return list(out["input_ids"])


def encode(tok, messages: list[dict], where: str = "conversation") -> Example:
    """Token ids of a conversation and its assistant-token mask (see the module docstring)."""
    ids = _ids(tok, messages)
    mask = [False] * len(ids)
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        start, end = _ids(tok, messages[:i], generation_prompt=True), _ids(tok, messages[:i + 1])
        if ids[:len(start)] != start or ids[:len(end)] != end:
            raise InputError(f"{where}: the chat template is not prefix-stable (rendering later turns changes "
                             f"earlier tokens at message {i}), so assistant tokens cannot be located")
        mask[len(start):len(end)] = [True] * (len(end) - len(start))
    return Example(ids, mask)


def given_ids(row: dict, where: str, vocab: int) -> Example:
    """A row's own `input_ids` and `loss_mask`, used untouched (see the module docstring)."""
    ids, mask = row.get("input_ids"), row.get("loss_mask")
    if not (isinstance(ids, list) and isinstance(mask, list) and ids and len(ids) == len(mask)
            and all(type(i) is int and 0 <= i < vocab for i in ids) and all(m in (0, 1) for m in mask) and any(mask)):
        raise InputError(f'{where}: "input_ids" must be token ids below the vocabulary size {vocab}, and '
                         '"loss_mask" as many 0/1 flags with at least one 1')
    return Example(list(ids), [bool(m) for m in mask])


def load_conversations(path: str | Path, tok, max_length: int) -> list[Example]:
    path, out = Path(path), []
    if not path.exists():
        raise FileNotFoundError(f"SFT data {str(path)!r} does not exist")
    for n, row in read_jsonl(path):
        where = f"{path}:{n}"
        msgs = row.get("messages")
        if not isinstance(msgs, list) or not msgs:
            raise InputError(f'{where}: expected an object with a non-empty "messages" list')
        for m in msgs:
            if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
                raise InputError(f"{where}: a message needs a role in {sorted(ROLES)} and a string content; got {m!r}")
        if not any(m["role"] == "assistant" for m in msgs):
            raise InputError(f"{where}: no assistant turn, so nothing to train on")
        if row.get("tools") and "input_ids" not in row and template_offers_tools(tok):
            raise InputError(f"{where}: the conversation offers its tools in the tag format (rlvr distill), but this "
                             "model's chat template has a tool format of its own, in which RL offers them: the "
                             "prompts would differ")
        ex = (given_ids(row, where, len(tok)) if "input_ids" in row else
              encode(tok, [{"role": m["role"], "content": m["content"]} for m in msgs], where))
        if len(ex.ids) > max_length:
            raise InputError(f"{where}: {len(ex.ids)} tokens > max_length={max_length} "
                             "(raise --max_length or drop the conversation)")
        out.append(ex)
    if not out:
        raise InputError(f"{path}: no conversations")
    return out


def make_rows(examples: list[Example], pack: bool, max_length: int, seed: int) -> list[list[Example]]:
    """One example a row, or (pack) shuffled examples filled greedily into rows of max_length."""
    if not pack:
        return [[ex] for ex in examples]
    order = list(examples)
    random.Random(f"sft-pack/{seed}").shuffle(order)
    rows, row, used = [], [], 0
    for ex in order:
        if row and used + len(ex.ids) > max_length:
            rows.append(row)
            row, used = [], 0
        row.append(ex)
        used += len(ex.ids)
    return rows + [row]


def collate(rows: list[list[Example]], pad_id: int, device) -> dict[str, torch.Tensor]:
    """ids, positions (restarting per example), segment ids (0: padding), loss mask, all [B, T]."""
    T = max(sum(len(ex.ids) for ex in row) for row in rows)
    ids = torch.full((len(rows), T), pad_id, dtype=torch.long)
    pos, seg = torch.zeros_like(ids), torch.zeros_like(ids)
    mask = torch.zeros_like(ids, dtype=torch.bool)
    for b, row in enumerate(rows):
        at = 0
        for s, ex in enumerate(row, 1):
            n = len(ex.ids)
            ids[b, at:at + n] = torch.tensor(ex.ids)
            pos[b, at:at + n] = torch.arange(n)
            seg[b, at:at + n] = s
            mask[b, at:at + n] = torch.tensor(ex.mask)
            at += n
    return {k: v.to(device) for k, v in dict(ids=ids, pos=pos, seg=seg, mask=mask).items()}


def _targets(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Where the loss is taken [B, T-1]: token t is predicted at t-1, only where t is the
    assistant's and t-1 is the same example."""
    seg = batch["seg"]
    return batch["mask"][:, 1:] & (seg[:, 1:] == seg[:, :-1])


def loss_sum(parts, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """Summed cross-entropy over assistant tokens and their count.

    Attention is causal within a segment only (block-diagonal); padding is its own
    segment, so every query sees at least itself and no softmax row is empty.
    """
    ids, seg = batch["ids"], batch["seg"]
    T = ids.shape[1]
    causal = torch.ones(T, T, dtype=torch.bool, device=ids.device).tril()
    attn = ((seg[:, :, None] == seg[:, None, :]) & causal)[:, None]
    hidden, _ = forward(parts, ids, batch["pos"], mask=attn)
    target = _targets(batch)
    h, labels = hidden[:, :-1][target], ids[:, 1:][target]  # only the rows the loss needs
    if chunked(parts.lm_head, labels.numel()):  # a real vocabulary: never the whole logits at once
        return -token_logprobs(h, parts.lm_head.weight, labels)[0].sum(), int(target.sum())
    return F.cross_entropy(parts.lm_head(h).float(), labels, reduction="sum"), int(target.sum())


def train_rows(parts, rows: list[list[Example]], pad_id: int, device, max_tokens: int | None = None,
               par: Parallel = SINGLE) -> tuple[float, int, int, int]:
    """Forward and backward one step's rows: the gradient of their mean token loss, in
    micro-batches of at most `max_tokens` padded tokens (`batch.plan_rows`: rows sorted by
    length, so short ones do not pad to the longest), each loss divided by the whole
    step's token count, so the gradient is the step's whatever the split. Returns the
    mean loss, the loss tokens, the tokens computed (padding aside) and the micro-batches.
    Under torchrun `rows` are this rank's share of the step and the count divided by is
    every rank's (the loss returned is the whole step's; the counts are this rank's)."""
    lengths = [sum(len(ex.ids) for ex in row) for row in rows]
    batches = [collate([rows[i] for i in idx], pad_id, device) for idx in plan_rows(lengths, max_tokens)] if rows else []
    own = sum(int(_targets(b).sum()) for b in batches)
    total = max(par.sum([own])[0], 1)
    most = int(par.max([len(batches)])[0])  # fsdp: each rank runs as many micro-batches (`par.pad`)
    loss = 0.0  # summed where the model runs: one host sync a step, not one a micro-batch
    for batch in batches:
        part = par.run(lambda: loss_sum(parts, batch)[0]) / total
        part.backward()
        loss = loss + part.detach()
    idle = [[Example([pad_id, pad_id], [False, True])]]  # fsdp: a two-token row, its loss weighed 0
    par.pad(most - len(batches), lambda: loss_sum(parts, collate(idle, pad_id, device))[0])
    return par.sum([float(loss)])[0], own, sum(lengths), len(batches)


# -- the trainer ---------------------------------------------------------------------------
class SFT(Trainer):
    command = "sft"

    def inherited(self) -> Totals:
        # Whatever produced the starting model and the data (e.g. a teacher's tokens).
        return inherited_from(self.cfg.model, self.cfg.data)

    def setup(self, state: dict) -> None:
        cfg = self.cfg
        self.rows = make_rows(load_conversations(cfg.data, self.tok, cfg.max_length), cfg.pack, cfg.max_length,
                              cfg.seed)
        self.max_tokens = self.par.whole(lambda: micro_batch_tokens(self.parts, cfg.activation_gb))
        self.per_epoch = -(-len(self.rows) // cfg.batch_size)
        self.steps = cfg.max_steps or cfg.epochs * self.per_epoch
        # Under a budget the cosine spans the steps it affords (estimated from the data; the
        # same after a resume), and so does the progress bar.
        self.horizon = Horizon(cosine=True, steps=self.steps, budget_flops=cfg.budget_flops)
        epoch_tokens = sum(len(ex.ids) for row in self.rows for ex in row)
        per_step = self.compute.flops_per_trained_token * epoch_tokens / self.per_epoch
        self.horizon.fit(0, self.compute.inherited.flops, per_step)
        self.expected = self.horizon.total

    def make_evaluator(self) -> Evaluator:
        return Evaluator(self.cfg, self.run, None, self.model, self.tok, seed=self.cfg.seed, par=self.par)

    def rate(self, step: int) -> float:
        return self.horizon.rate(step, self.cfg.lr, self.cfg.warmup)

    def train_step(self, step: int) -> dict[str, float]:
        rows = self.batch_at(step)[self.par.rank::self.par.world]  # under torchrun, this rank's share
        loss, n_tokens, seen, micro = train_rows(self.parts, rows, self.tok.pad_token_id, self.device,
                                                 self.max_tokens, self.par)
        grad_norm = self.update(self.cfg.grad_clip)
        self.compute.trained(seen)
        return {"loss": loss, "grad_norm": grad_norm, "epoch": step // self.per_epoch, "loss_tokens": n_tokens,
                "trained_tokens": seen, "micro_batches": micro}

    def batch_at(self, step: int) -> list[list[Example]]:
        # The order of an epoch depends only on (seed, epoch), so a resumed run reads
        # exactly the batches the killed one would have.
        epoch, i = divmod(step, self.per_epoch)
        order = list(range(len(self.rows)))
        random.Random(f"sft/{self.cfg.seed}/{epoch}").shuffle(order)
        return [self.rows[j] for j in order[i * self.cfg.batch_size:(i + 1) * self.cfg.batch_size]]

    def summary(self) -> dict:
        return {"data": self.cfg.data}


def main(cfg: SFTConfig) -> Run:
    return SFT(cfg).train()
