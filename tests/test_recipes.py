"""Every recipe in recipes/ says what it reproduces, loads with `rlvr CMD --config`, and
runs a few steps on the micro base (the steps overridden small, the task the micro
base's). The distil-then-RL recipes run as the chain their comments give.

Run: ``.venv/bin/python -m pytest tests/test_recipes.py -q`` (CPU, about a minute).
"""

import json
import re
from pathlib import Path

import pytest

from conftest import ENV
from rlvr.cli import _commands
from rlvr.cli import main as cli
from rlvr.config import load_config

RECIPES = sorted((Path(__file__).parent.parent / "recipes").glob("*.yaml"))
ENV_ARG = "--env=" + json.dumps(ENV)  # JSON is YAML: what the command line reads
SMALL_EVAL = ["--eval_problems=4", "--eval_samples=2", "--max_new_tokens=16"]
RL_SMALL = ["--steps=2", "--prompts=4", "--group_size=4", "--eval_every=0", *SMALL_EVAL]


def command_of(path: Path) -> str:
    """The command a recipe is for, from its own `rlvr CMD --config recipes/NAME.yaml` line."""
    found = re.search(rf"rlvr (\S+) --config recipes/{re.escape(path.name)}", path.read_text())
    assert found, f"{path.name}: no `rlvr CMD --config recipes/{path.name}` line"
    return found.group(1)


def test_the_recipes_people_know_are_there():
    names = {p.stem for p in RECIPES}
    assert {"r1_zero", "dapo", "dr_grpo", "rest_em", "distill", "distill_sft", "distill_rl", "smollm2_lora"} <= names


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_recipe_header_and_load(path):
    lines = path.read_text().splitlines()
    head = "\n".join(lines[:next(i for i, line in enumerate(lines) if not line.startswith("#"))])
    for part in ("Reproduces:", "Run:", "Expect:"):
        assert part in head, f"{path.name}: no {part!r} in its opening comments"
    assert re.search(r"\b(19|20)\d\d\b", head), f"{path.name}: cite the source paper (with its year)"
    cls = _commands()[command_of(path)][0]
    load_config(cls, path)  # every key known, every value valid


def run(tmp_path, capsys, name, *overrides):
    rc = cli([command_of(Path(f"recipes/{name}.yaml")), "--config", str(RECIPES[0].parent / f"{name}.yaml"),
              f"--run_dir={tmp_path / name}", *overrides])
    assert rc == 0, capsys.readouterr().err
    return tmp_path / name


@pytest.mark.parametrize("name", ["r1_zero", "dapo", "dr_grpo"])
def test_rl_recipes_run(name, micro_base, tmp_path, capsys):
    out = run(tmp_path, capsys, name, f"--model={micro_base}", ENV_ARG, *RL_SMALL)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows][-2:] == [1, 2] and (out / "summary.json").exists()


def test_rest_em_runs(micro_base, tmp_path, capsys):
    out = run(tmp_path, capsys, "rest_em", f"--model={micro_base}", ENV_ARG, "--rounds=1", "--problems=8", "--n=4",
              *SMALL_EVAL)
    assert json.loads((out / "summary.json").read_text())["rounds"] == 1


def test_distill_then_rl_chain(micro_base, tmp_path, capsys):
    data = run(tmp_path, capsys, "distill", f"--teacher={micro_base}", ENV_ARG, "--problems=8", "--k=2",
               "--max_tokens=16") / "data.jsonl"
    assert data.exists()
    student = run(tmp_path, capsys, "distill_sft", f"--model={micro_base}", f"--data={data}", "--eval_env="
                  + json.dumps(ENV), "--epochs=1", "--batch_size=4", "--eval_problems=4", "--eval_samples=2")
    out = run(tmp_path, capsys, "distill_rl", f"--model={student}", ENV_ARG, *RL_SMALL)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 2 and summary["inherited"]["flops"] > 0  # the SFT's, and its teacher's


def test_smollm2_lora_recipe_validates():
    cfg = load_config(_commands()["rl"][0], RECIPES[0].parent / "smollm2_lora.yaml")
    assert cfg.model == "smollm2-135m" and cfg.lora_r > 0 and cfg.answer_format == "answer_is"


@pytest.mark.slow
def test_smollm2_lora_recipe_runs_a_step(tmp_path, capsys):
    from rlvr.models import hub

    if hub.cached("smollm2-135m") is None:
        pytest.skip("smollm2-135m is not downloaded (rlvr models get smollm2-135m)")
    out = run(tmp_path, capsys, "smollm2_lora", "--steps=1", "--prompts=2", "--group_size=2", "--eval_every=0",
              "--eval_problems=2", "--eval_samples=1")
    assert json.loads((out / "summary.json").read_text())["steps"] == 1
