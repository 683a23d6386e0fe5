"""Suite-wide test settings, and the pretrained micro base the trainer tests share."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    # The suite's models are tiny: with 2 OpenMP threads on a 2-core machine where
    # anything else runs, every op waits for the busy core. One thread is faster and steady.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# 1-digit additions with a worked scratchpad; 70% of the pretraining solutions slip.
ENV = {"name": "arithmetic", "digits": 1, "ops": ["add"], "template": "{expr}"}

# Metrics that measure the machine (clocks, rates, peak memory) rather than what a run computed:
# a repeated run must match in everything else. Peak RSS is the process's high-water mark, so
# it repeats only when an earlier test happened to set it higher.
MEASURED = ("time", "per_s", "wall", "seconds", "wait_for_workers", "_gb")


def computed(rows: list[dict]) -> list[dict]:
    """Metric rows without their machine measurements (`MEASURED`)."""
    return [{k: v for k, v in r.items() if not any(c in k for c in MEASURED)} for r in rows]

# The micro base: 800 steps with a cosine decay, long enough that every seed has learned
# to read its operands on every kernel path (the learning tests' margins depend on it).
MICRO_BASE = dict(env=ENV, preset="micro", steps=800, batch_size=64, lr=3e-3, warmup=10, slip=0.7, seed=0,
                  check_every=0)


@pytest.fixture(scope="session")
def micro_base(tmp_path_factory):
    """A micro model pretrained for a few seconds: a weak but real signal on ENV."""
    from rlvr.train import pretrain

    run_dir = tmp_path_factory.mktemp("base")
    pretrain.main(pretrain.PretrainConfig(run_dir=str(run_dir), **MICRO_BASE))
    return run_dir


class GradCapture:
    """An optimizer that records the gradient it is handed instead of stepping."""

    def __init__(self, params):
        self.params, self.grads = list(params), None
        self.param_groups = [{"lr": 1.0}]  # what a trainer may rescale (lr_by_signal)

    def step(self):
        import torch
        self.grads = [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in self.params]

    def zero_grad(self, set_to_none=True):
        for p in self.params:
            p.grad = None


def build_bpe_llama(path, seed: int = 0):
    """A tiny random Llama (2 layers, width 64, GQA, untied head) with a real byte-level
    BPE tokenizer trained here on arithmetic text, saved as a HF directory at `path`.

    Its tokens span several characters ("Compute", "####", digit pairs), so a decoded
    completion re-tokenizes to other ids than the ones sampled: what the char tokenizer
    can never show.
    """
    import random

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from rlvr.models import save_model
    from rlvr.models.tokenizer import CHAT_TEMPLATE, EOS, PAD, SPECIALS, UNK

    rng = random.Random(seed)
    lines = []
    for _ in range(400):
        a, b = rng.randint(0, 999), rng.randint(0, 999)
        op, value = rng.choice([("+", a + b), ("-", a - b), ("*", a * b)])
        lines.append(f"Compute {a}{op}{b}. End with #### and the result.\n{a} {op} {b} = {value} #### {value}")
    core = Tokenizer(models.BPE(unk_token=None))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    core.train_from_iterator(lines, trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token=PAD, eos_token=EOS, unk_token=UNK,
                                  padding_side="left", clean_up_tokenization_spaces=False)
    tok.chat_template = CHAT_TEMPLATE
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, intermediate_size=128, max_position_embeddings=256,
                         tie_word_embeddings=False, bos_token_id=None, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id)
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    return save_model(model, tok, path)


@pytest.fixture(scope="session")
def bpe_llama(tmp_path_factory):
    """A HF directory: tiny random Llama + trained byte-level BPE tokenizer (build_bpe_llama)."""
    return build_bpe_llama(tmp_path_factory.mktemp("bpe_llama") / "model")


class served:
    """An ASGI app served by uvicorn on a free loopback port in a thread: `with served(app) as url:`."""

    def __init__(self, app):
        import socket

        import uvicorn

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))

    def __enter__(self) -> str:
        import threading
        import time

        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        for _ in range(1000):
            if self.server.started:
                break
            time.sleep(0.01)
        assert self.server.started
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
