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

    def step(self):
        import torch
        self.grads = [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in self.params]

    def zero_grad(self, set_to_none=True):
        for p in self.params:
            p.grad = None
