"""Config keys that several commands share, each declared once: its type, bounds and
the line `rlvr CMD --help` prints. A command's config names the key and, where its
default differs, gives its own:

    class SFTConfig(TrainerFields):
        grad_clip: GradClip
        warmup: Warmup = 10

They are annotated types rather than a shared base class so that each command's
`--help` keeps its keys in its own order (a base class's keys print last, as shared).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field

# -- the model's place (every command that loads a model) --------------------------------
DEVICES = "auto, cpu, cuda, cuda:N or mps"


def _device(name: str) -> str:
    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", name):
        raise ValueError(f"unknown device {name!r}: expected {DEVICES}")
    return name


Device = Annotated[str, AfterValidator(_device), Field("auto", description=f"Where the model runs: {DEVICES} (auto: cuda when present, else cpu).")]
DType = Annotated[Literal["auto", "float32", "bfloat16", "float16"], Field("auto", description="Weight dtype: auto is bfloat16 on a GPU, float32 on CPU (where bf16 matmuls are several times slower).")]

# -- trainers (rlvr pretrain, sft, rs, rl) -----------------------------------------------
DEMO_BASE = "runs/demo/base"  # `rlvr demo` points it at the tiny base it pretrained: the default start
StartModel = Annotated[str, Field(DEMO_BASE, description=f"Starting model: HF dir, checkpoint, run dir, .gguf or a registered name ({DEMO_BASE}: the base `rlvr demo` pretrained).")]
EnvSpec = Annotated[Any, Field("arithmetic", description="Environment spec: a name, 'name:key=value,...', or a mapping.")]
Warmup = Annotated[int, Field(ge=0, description="Linear warm-up steps.")]
WeightDecay = Annotated[float, Field(0.0, ge=0, description="AdamW weight decay.")]
GradClip = Annotated[float, Field(1.0, gt=0, description="Gradient norm clip.")]
SaveEvery = Annotated[int, Field(0, ge=0, description="Checkpoint every N steps (0: only at the end).")]
KeepLast = Annotated[int, Field(2, ge=1, description="Checkpoints kept.")]
Resume = Annotated[bool, Field(False, description="Continue the run in run_dir from its last checkpoint.")]
ParallelMode = Annotated[Literal["ddp", "fsdp"], Field("ddp", description="Under torchrun: ddp (every rank holds the model; gradients all-reduced) or fsdp (FSDP2: parameters, gradients and optimizer state sharded between steps). Ignored in one process.")]
DistTimeout = Annotated[float, Field(1800.0, gt=0, description="Under torchrun: seconds a rank waits for its peers (joining, or any collective) before the run fails.")]
Tensorboard = Annotated[bool, Field(False, description="Also write metrics as TensorBoard events in RUN_DIR/tensorboard.")]
Wandb = Annotated[bool, Field(False, description="Also log metrics to a Weights & Biases run (files in RUN_DIR/wandb; WANDB_MODE=offline to sync later; needs rlvr[wandb]).")]
WandbProject = Annotated[str, Field("rlvr", description="The W&B project of --wandb (the entity: WANDB_ENTITY, or your default).")]

# -- experiments that pretrain their own base (rlvr demo, rlvr experiment ...) -------------
PretrainSteps = Annotated[int, Field(1500, ge=1, description="Most pretraining steps of the base (its held-out check stopped the demo's bases at 250-400 in EXPERIMENTS.md's 15-run table).")]
BaseSeed = Annotated[int, Field(0, description="Seed of the base's pretraining, apart from `seed` (the base is cached per config, so runs with other seeds share it).")]
PipelineSeed = Annotated[int, Field(0, description="Seed of sampling, RL and evaluation problems (the base has its own).")]
DistillProblems = Annotated[int, Field(ge=1, description="Training problems the teacher solves.")]
TeacherSolutions = Annotated[int, Field(4, ge=1, description="Teacher solutions per problem.")]
HeldOutProblems = Annotated[int, Field(ge=1, description="Held-out problems of every evaluation.")]
RLEvalEvery = Annotated[int, Field(ge=1, description="RL steps between evaluations.")]
