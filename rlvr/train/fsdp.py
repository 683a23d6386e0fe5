"""FSDP2 units for `--parallel fsdp` (rlvr/train/parallel.py uses them): one per decoder layer, and a root.

rlvr's trainers run a functional forward (rlvr/models/forward.py) that never calls the
model's modules, so FSDP's hooks, which fire around a module's call, would never run.
Each decoder layer gets a method `forward.ENTER` that the functional forward calls with
the layer's computation; FSDP registers it as a forward method, so the layer's weights
are gathered as the forward enters it and freed after. `Root` is the same for the rest
of the model (embeddings, final norm, head): its forward runs whatever function it is
given. Gradients are summed over ranks, never averaged (parallel.py says why).
"""

from __future__ import annotations

import warnings
from types import MethodType
from typing import Any, Callable

import torch

from rlvr.config import InputError
from rlvr.models.forward import ENTER


class Root(torch.nn.Module):
    """The model as an FSDP unit whose forward runs any function: rlvr's functional
    forward reaches the layers without calling the model, so the unit's hooks (gather the
    parameters, reduce the gradients) fire around `fn` instead."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, fn: Callable[[], Any]) -> Any:
        return fn()


def shard_by_layer(model: torch.nn.Module, world: int) -> tuple[Root, list]:
    """Shard `model` in place over `world` ranks: a unit per decoder layer, then the root.
    Returns the root unit and the layers' units."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard, register_fsdp_forward_method

    from rlvr.models.lora import is_lora

    if is_lora(model):
        raise InputError("--parallel fsdp does not shard LoRA models (their adapters are small): use --parallel ddp")
    layers = getattr(getattr(model, "model", None), "layers", None)
    if not isinstance(layers, torch.nn.ModuleList):
        raise InputError(f"--parallel fsdp: {type(model).__name__} has no decoder layers at model.layers to shard")
    dtype = next(model.parameters()).dtype
    model.float()  # fp32 shards are the master weights; compute runs in the model's dtype
    device = next(model.parameters()).device
    shard = dict(mesh=init_device_mesh(device.type, (world,)),
                 mp_policy=MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32))
    # A layer's keys and values leave its unit as views; nothing writes into them in place.
    warnings.filterwarnings("ignore", message="FSDP2-wrapped module .* returned a view tensor")
    for layer in layers:  # each its own unit, entered by rlvr's forward through ENTER
        setattr(layer, ENTER, MethodType(_enter, layer))
        fully_shard(layer, reshard_after_forward=True, **shard)
        register_fsdp_forward_method(layer, ENTER)
    root = Root(model)
    fully_shard(root, **shard)
    for unit in [root, *layers]:
        # Gradients summed, not averaged (each rank's loss is already its share of the
        # step's); a parameter without one is reduced as zeros, so every rank's
        # reduce-scatter has the same size.
        unit.set_gradient_divide_factor(1.0)
        unit.set_force_sum_reduction_for_comms(True)
        unit.set_reduce_scatter_unused_params(True, recurse=False)
    # Backward prefetches the layer before, named: FSDP's default follows the order of
    # the last forwards, which no-grad passes (proximal log-probs, generation) also
    # enter, and would then gather a layer on one rank and not on another.
    for before, layer in zip([root, *layers], layers):
        layer.set_modules_to_backward_prefetch([before])
    root.set_modules_to_backward_prefetch(list(layers)[-1:])
    return root, list(layers)


def _enter(layer: torch.nn.Module, fn: Callable[..., Any], *args: Any) -> Any:
    """A decoder layer's `forward.ENTER` method: `fn(*args)`, which FSDP's hooks wrap."""
    return fn(*args)


def fixed_mmap_threshold(size: int = 1 << 20) -> None:
    """Under fsdp on CPU every micro-batch allocates and frees each layer's gathered weights
    and gradient buffers. glibc raises its mmap threshold to the size of a freed block, so
    after the first these come from its heap, which keeps what they free: a rank's resident
    memory grew to twice what it held (SmolLM2, BENCHMARKS.md). A fixed threshold keeps
    blocks of `size` and more in mmap, returned to the system when freed. No-op off glibc."""
    import ctypes
    import ctypes.util
    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt(-3, size)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass
