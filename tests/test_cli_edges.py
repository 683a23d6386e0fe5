"""The command line's edges: bad input is one line naming the problem (exit 2), help and
listings exit 0, and a start that fails leaves no run directory behind.

Run: ``.venv/bin/python -m pytest tests/test_cli_edges.py -q`` (CPU, seconds).
"""

import pytest

from rlvr.cli import main as cli
from rlvr.fields import DEMO_BASE


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # commands write ./runs/...: here, not in the checkout


def run(capsys, *argv):
    rc = cli(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_bad_device_names_the_valid_ones(capsys, tmp_path):
    for cmd in ("rl", "sft", "eval", "serve", "distill"):
        rc, _, err = run(capsys, cmd, *(["m"] if cmd == "serve" else []), "--device", "tpu")
        assert rc == 2 and len(err.strip().splitlines()) == 1, (cmd, err)
        assert "unknown device 'tpu'" in err and "cuda:N" in err
    assert not (tmp_path / "runs").exists()


def test_resume_of_a_missing_run(capsys):
    rc, _, err = run(capsys, "rl", "--resume", "--run_dir", "nosuchrun")
    assert rc == 2 and "run directory 'nosuchrun' does not exist" in err


def test_serve_without_a_model_says_what_to_pass(capsys):
    rc, _, err = run(capsys, "serve")
    assert rc == 2 and "missing 'model'" in err and "--model=" in err and "PydanticUndefined" not in err
    rc, out, _ = run(capsys, "serve", "--help")
    assert rc == 0 and "--model=...  [str, required]" in out and "PydanticUndefined" not in out
    assert "--device='auto'" in out and "--dtype='auto'" in out


def test_experiment_listing_and_unknown_names(capsys):
    for argv in (["experiment"], ["experiment", "--help"]):
        rc, out, _ = run(capsys, *argv)
        assert rc == 0 and "regimes" in out and "noise" in out
    rc, _, err = run(capsys, "experiment", "nosuch")
    assert rc == 2 and "unknown experiment 'nosuch' (known: ceiling," in err


def test_version(capsys):
    from rlvr import __version__
    assert run(capsys, "--version") == (0, f"rlvr {__version__}\n", "")


def test_models_get_without_a_name(capsys):
    rc, _, err = run(capsys, "models", "get")
    assert rc == 2 and "usage: rlvr models get NAME" in err


def test_default_model_says_how_to_get_it(capsys, tmp_path):
    rc, _, err = run(capsys, "rl", "--steps=1")
    assert rc == 2 and DEMO_BASE in err and "rlvr demo" in err and "--model" in err
    assert not (tmp_path / "runs").exists()  # nothing half-made: no runs/rl/config.yaml


def test_failed_start_leaves_nothing_behind(capsys, tmp_path):
    (tmp_path / "runs").mkdir()
    rc, _, err = run(capsys, "sft", "--model=nosuchmodel", "--run_dir=runs/a/b")
    assert rc == 2 and "nosuchmodel" in err
    assert list((tmp_path / "runs").iterdir()) == []  # runs/ was there before; a/ was this start's
    existing = tmp_path / "mine"
    existing.mkdir()
    (existing / "notes.txt").write_text("keep")
    assert run(capsys, "rl", "--model=nosuchmodel", f"--run_dir={existing}")[0] == 2
    assert sorted(p.name for p in existing.iterdir()) == ["notes.txt"]
    rc, _, err = run(capsys, "distill", "--teacher=nosuchmodel", "--run_dir=runs/d")
    assert rc == 2 and "nosuchmodel" in err and not (tmp_path / "runs" / "d").exists()


def test_config_flag_reads_a_recipe(capsys, tmp_path):
    (tmp_path / "r.yaml").write_text("steps: 3\nlr_typo: 1\n")
    rc, _, err = run(capsys, "rl", "--config", "r.yaml")
    assert rc == 2 and "r.yaml:2: unknown key 'lr_typo'" in err
    rc, _, err = run(capsys, "rl", "r.yaml", "--config=r.yaml")
    assert rc == 2 and "two recipes" in err


def test_envs_escapes_markup(capsys, monkeypatch):
    from rlvr import inspect_envs
    monkeypatch.setattr(inspect_envs, "list_envs", lambda cfg: [
        {"env": "code", "prompt": "def f(l):", "gold": "if l[i] + l[j] + l[k] == 0:"}])
    rc, out, _ = run(capsys, "envs")
    assert rc == 0 and "l[i] + l[j] + l[k]" in out


def test_gym_tasks_listed_and_suggested(capsys):
    pytest.importorskip("reasoning_gym")
    rc, out, _ = run(capsys, "envs", "--gym")
    assert rc == 0 and "gym:basic_arithmetic" in out.splitlines()
    rc, _, err = run(capsys, "rl", "--env", "gym:basic_arithmetc")
    assert rc == 2 and "did you mean basic_arithmetic" in err
    rc, _, err = run(capsys, "rl", "--env", "gym:qqqqqqqq")
    assert rc == 2 and "did you mean" not in err and "rlvr envs --gym" in err


def test_the_demo_base_cache_key_ignores_keys_that_change_no_weight():
    """Logging mirrors and the process layout change no weight: adding them keeps every
    cached base (runs/base-<digest>); the seed does change it."""
    from rlvr.demo import base_digest
    from rlvr.train.pretrain import PretrainConfig
    plain = base_digest(PretrainConfig(steps=1500, seed=0))
    assert plain == base_digest(PretrainConfig(steps=1500, seed=0, wandb=True, parallel="fsdp", dist_timeout=60))
    assert plain != base_digest(PretrainConfig(steps=1500, seed=1))
