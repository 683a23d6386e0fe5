"""Shared helpers for rlvr's benchmarks: timing, the machine's matmul peak, FLOP counting.

Why: a tokens/s number alone says little on a noisy VM; paired with what a large fp32
matmul achieves on the same machine in the same run, and with the FLOPs the model
really needed, it says how far from the hardware's limit the code runs.

FLOP counting convention (`forward_flops`): one multiply-add is 2 FLOPs, and only the
*useful* matmul work is counted: every `nn.Linear` weight (q/k/v/o, MLP, lm_head) once
per token, plus attention's QK^T and AV over the keys a token may really see (its
context length). Embedding lookups, norms, rotary and softmax are not counted; neither
is work an implementation wastes on masked or padded positions.

Used by the scripts next to it (e.g. `.venv/bin/python benchmarks/generate.py`);
`.venv/bin/python benchmarks/common.py` prints the header and the matmul peak alone.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from typing import Callable, Sequence

import torch


def median_time(fn: Callable[[], object], warmup: int = 1, repeats: int = 5) -> float:
    """Median wall-clock seconds of `fn()` over `repeats` calls, after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def matmul_flops_per_s(size: int = 2048, repeats: int = 5, dtype: torch.dtype = torch.float32,
                       device: str = "cpu") -> float:
    """FLOP/s of one large square matmul (2 * size^3 FLOPs), median of `repeats`: the practical peak.
    On a GPU pass its benchmark dtype (bf16) and a larger size (8192)."""
    a = torch.randn(size, size, dtype=dtype, device=device)
    b = torch.randn(size, size, dtype=dtype, device=device)
    out = torch.empty(size, size, dtype=dtype, device=device)

    def mm():
        torch.mm(a, b, out=out)
        if out.is_cuda:
            torch.cuda.synchronize()

    seconds = median_time(mm, warmup=1, repeats=repeats)
    return 2.0 * size ** 3 / seconds


# The CPU kernels that do the counted work: projections (oneDNN-packed or not), the LM
# head, attention's batched matmuls, SDPA (its softmax included), and their backward.
MATMUL_KERNELS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "mkldnn::_linear_pointwise",
                  "aten::_scaled_dot_product_flash_attention_for_cpu",
                  "aten::_scaled_dot_product_flash_attention_for_cpu_backward")


def matmul_kernel_seconds(fn: Callable[[], object]) -> tuple[float, object]:
    """Seconds `fn()` spent inside matmul kernels (CPU profiler, their self time), and its
    result. What a run would take if nothing but its matmuls cost time."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        out = fn()
    return sum(e.self_cpu_time_total for e in prof.key_averages() if e.key in MATMUL_KERNELS) / 1e6, out


def device_peak(device: str) -> tuple[float, str]:
    """(FLOP/s, what was measured): an fp32 2048^3 matmul on CPU, a bf16 8192^3 one on a GPU."""
    if device == "cpu":
        return matmul_flops_per_s(), "fp32 2048^3"
    return matmul_flops_per_s(8192, dtype=torch.bfloat16, device=device), "bf16 8192^3"


def _geometry(model) -> tuple[int, int, int]:
    cfg = model.config
    heads = cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    return cfg.num_hidden_layers, heads, head_dim


def _linear_weights(model) -> tuple[int, int]:
    """(weights of every Linear except the output head, weights of the output head)."""
    head = model.get_output_embeddings()
    body = sum(m.weight.numel() for m in model.modules()
               if isinstance(m, torch.nn.Linear) and m is not head)
    return body, (head.weight.numel() if head is not None else 0)


def model_flops_per_token(model) -> float:
    """Context-free matmul FLOPs of one token's forward: 2 x (all Linear weights, lm_head included).

    Embedding tables are lookups, not matmuls, so a tied embedding counts once (as the
    lm_head). Attention's context-dependent part is in `forward_flops`.
    """
    body, head = _linear_weights(model)
    return 2.0 * (body + head)


def forward_flops(model, n_tokens: float, context_len: float, logits_tokens: float | None = None) -> float:
    """Useful matmul FLOPs of a forward over `n_tokens` tokens.

    `context_len`: keys each token attends to, on average (for a causal prompt of length
    L that is (L + 1) / 2; for one decoded token at position p, p + 1). Per token and
    layer attention costs 2 * heads * head_dim * context_len for QK^T and as much for AV.
    `logits_tokens`: how many of the tokens go through the lm_head (default all; a
    generation prefill needs only the last one).
    """
    layers, heads, head_dim = _geometry(model)
    body, head = _linear_weights(model)
    logits_tokens = n_tokens if logits_tokens is None else logits_tokens
    attention = 4.0 * layers * heads * head_dim * context_len
    return n_tokens * (2.0 * body + attention) + logits_tokens * 2.0 * head


def generation_flops(model, prompt_lens: Sequence[int], new_tokens: int, n: int = 1) -> tuple[float, float]:
    """(prefill, decode) useful FLOPs of sampling `new_tokens` for each prompt, n samples each.

    Prefill runs each prompt once, causally, with logits for its last token only (that
    gives the first new token). Each of the `new_tokens - 1` decode steps feeds one token
    that sees the prompt and every token before it, and produces logits.
    """
    prefill = sum(forward_flops(model, L, (L + 1) / 2, logits_tokens=1) for L in prompt_lens)
    decode = n * sum(forward_flops(model, 1, L + t + 1) for L in prompt_lens for t in range(new_tokens - 1))
    return prefill, decode


def model_dir(name: str, tmp: str) -> str:
    """The directory both sides of a benchmark load: "tiny" is the random-init preset
    "small" saved into `tmp`; a registered name (`rlvr models get`) its cached copy; else a path."""
    if name == "tiny":
        from rlvr.models import save_model
        from rlvr.models.tiny import build_tiny_model

        path = os.path.join(tmp, "model")
        save_model(*build_tiny_model("small", seed=0), path)
        return path
    from rlvr.models.hub import REGISTRY, resolve

    return str(resolve(name)) if name in REGISTRY else name


def meta_model(path: str):
    """The model's modules without its weights (on the meta device): enough to count its FLOPs."""
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path))


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def print_header(title: str) -> None:
    """Print what the numbers depend on: versions, threads, CPU, load (this VM is shared)."""
    import transformers

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"# {title}")
    print(f"# torch {torch.__version__} | transformers {transformers.__version__} | python {platform.python_version()}")
    print(f"# threads {torch.get_num_threads()} | cpus {os.cpu_count()} | cpu {cpu_model()} | "
          f"mkldnn {torch.backends.mkldnn.is_available()} | load(1m) {load:.2f}")


if __name__ == "__main__":
    print_header("matmul peak")
    print(f"matmul fp32 2048^3: {matmul_flops_per_s() / 1e9:.1f} GFLOP/s (median of 5)")
