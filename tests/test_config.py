"""Bad configs fail at start, naming the key (and the recipe's file and line)."""

import re

import pytest

from rlvr.config import ConfigError, load_config, parse_overrides
from rlvr.cli import main as cli
from rlvr.train.rl import RLConfig


def test_overrides_are_typed():
    cfg = load_config(RLConfig, overrides=["--lr=1e-3", "--steps", "7", "--drop_uniform_groups",
                                           "--env={name: arithmetic, digits: 2}"])
    assert cfg.lr == 1e-3 and cfg.steps == 7 and cfg.drop_uniform_groups is True
    assert cfg.env == {"name": "arithmetic", "digits": 2}


def test_a_list_key_takes_comma_separated_values_or_yaml():
    from rlvr.experiments.staleness import StalenessConfig

    cfg = load_config(StalenessConfig, overrides=["--lags", "0,4", "--lrs=5e-4,1e-4", "--corrections", "none,decoupled x4"])
    assert cfg.lags == [0, 4] and cfg.lrs == [5e-4, 1e-4] and cfg.corrections == ["none", "decoupled x4"]
    assert load_config(StalenessConfig, overrides=["--lags", "[2, 8]"]).lags == [2, 8]
    assert load_config(StalenessConfig, overrides=["--lags", "4"]).lags == [4]
    with pytest.raises(ConfigError, match=r"key 'lags.1'.*got 'x'"):
        load_config(StalenessConfig, overrides=["--lags", "0,x"])


def test_unknown_key_is_named_with_a_suggestion():
    with pytest.raises(ConfigError, match=r"unknown key 'lrr' \(did you mean 'lr'\?\)"):
        load_config(RLConfig, overrides=["--lrr=1"])


def test_wrong_type_is_named():
    with pytest.raises(ConfigError, match=r"key 'steps'.*got 'many'"):
        load_config(RLConfig, overrides=["--steps=many"])


def test_registry_names_are_checked():
    with pytest.raises(ConfigError, match=r"key 'advantage'.*choose one of"):
        load_config(RLConfig, overrides=["--advantage=ppo"])


def test_recipe_errors_name_file_and_line(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("steps: 3\nlr: 1e-4\ngroup_sise: 4\n")
    with pytest.raises(ConfigError, match=r"r\.yaml:3: unknown key 'group_sise' \(did you mean 'group_size'\?\)"):
        load_config(RLConfig, recipe)
    recipe.write_text("steps: -1\n")
    with pytest.raises(ConfigError, match=r"r\.yaml:1: key 'steps'"):
        load_config(RLConfig, recipe)


def test_command_line_beats_recipe(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("steps: 3\nlr: 1e-4\n")
    cfg = load_config(RLConfig, recipe, ["--steps=9"])
    assert (cfg.steps, cfg.lr) == (9, 1e-4)


def test_cli_reports_bad_config_and_exits_2(capsys):
    assert cli(["rl", "--nope=1"]) == 2
    assert "unknown key 'nope'" in capsys.readouterr().err
    assert cli(["rl", "--help"]) == 0
    assert "--max_staleness=0" in capsys.readouterr().out


def test_positional_garbage_is_rejected():
    with pytest.raises(ConfigError, match="unexpected argument"):
        parse_overrides(["steps=3"])
    # `--` (what ends torchrun's options before ours) is not an option of ours.
    assert parse_overrides(["--", "--n=2", "--keep", "none"]) == {"n": 2, "keep": "none"}


def test_envs_and_audit_commands(capsys):
    from rlvr.envs import ENVS
    from rlvr.inspect_envs import EnvsConfig, list_envs

    rows = list_envs(EnvsConfig())
    assert {r["env"] for r in rows} >= set(ENVS)
    assert all(r["gold"] for r in rows)  # every environment could make a problem here
    assert cli(["audit", "linear", "--problems", "3"]) == 0
    out = capsys.readouterr().out
    assert "grader_override" in out and "FAIL" not in out


def test_bad_input_is_one_line_not_a_traceback(capsys, tmp_path):
    assert cli(["compare", str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err.strip() == f"rlvr compare: {tmp_path / 'nope'}: no such run directory"
    (tmp_path / "data.jsonl").write_text('{"messages": []}\n{oops\n')
    assert cli(["sft", "--model", str(tmp_path / "missing"), "--data", str(tmp_path / "data.jsonl")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_help_puts_a_command_s_own_keys_before_the_shared_ones(capsys):
    assert cli(["rs", "--help"]) == 0
    out = capsys.readouterr().out
    assert out.index("--rounds") < out.index("shared by every trainer") < out.index("--budget_flops")
    assert cli(["compare", "--help"]) == 0
    assert "usage: rlvr compare RUNS" in capsys.readouterr().out


def test_a_recipe_may_follow_positional_arguments(tmp_path, capsys):
    recipe = tmp_path / "audit.yaml"
    recipe.write_text("problems: 3\n")
    assert cli(["audit", "linear", str(recipe)]) == 0
    assert "linear" in capsys.readouterr().out


def test_resume_continues_with_the_run_s_own_config(tmp_path, capsys):
    """`rlvr rl --run_dir D --resume` must not fall back to the defaults: the saved
    config.yaml is the base, and what is given again overrides it, said on stderr."""
    from rlvr.config import to_yaml

    run_dir = tmp_path / "rl"
    run_dir.mkdir()
    saved = RLConfig(run_dir=str(run_dir), env="countdown", steps=6, prompts=4, lr=1e-4)
    (run_dir / "config.yaml").write_text(to_yaml(saved))
    cfg = load_config(RLConfig, overrides=[f"--run_dir={run_dir}", "--resume"])
    assert (cfg.env, cfg.steps, cfg.prompts, cfg.lr, cfg.resume) == ("countdown", 6, 4, 1e-4, True)
    cfg = load_config(RLConfig, overrides=[f"--run_dir={run_dir}", "--resume", "--steps=10"])
    assert cfg.steps == 10 and cfg.prompts == 4
    assert "steps = 10 (command line; it ran with 6)" in capsys.readouterr().err
    # Without --resume the saved config is not read (a new run in that directory is refused later).
    assert load_config(RLConfig, overrides=[f"--run_dir={run_dir}"]).steps == RLConfig().steps


def test_more_bad_input_is_one_line(tmp_path, capsys):
    from rlvr.experiments.regimes import RegimesConfig
    from rlvr.envs import make_env
    from rlvr.config import InputError
    from rlvr.jsonl import read_jsonl

    assert load_config(RegimesConfig, overrides=["--seeds", "0,1,2"]).seeds == [0, 1, 2]  # as the README writes it
    assert load_config(RegimesConfig, overrides=["--seeds=3"]).seeds == [3]
    with pytest.raises(ConfigError, match="--lr: '\\[1,' is not a value YAML reads"):
        load_config(RLConfig, overrides=["--lr=[1,"])
    for spec, words in (("arithmetc", "unknown env 'arithmetc'"), ("arithmetic:digits=0", "digits must be")):
        with pytest.raises(InputError, match=words):
            make_env(spec)
    with pytest.raises(InputError, match="is a directory"):
        list(read_jsonl(tmp_path))
    rates = tmp_path / "rates.json"
    for text, words in (('{"fp": 1}', "not a noise-audit JSON"),
                        ('{"fp": {"estimate": 0.6}, "fn": {"estimate": 0.5}}', "noise_fp \\+ noise_fn = 1.1")):
        rates.write_text(text)
        assert cli(["rl", f"--run_dir={tmp_path / 'r'}", f"--noise_rates={rates}", "--reward_correction=backward"]) == 2
        err = capsys.readouterr().err
        assert re.search(words, err) and "Traceback" not in err and not (tmp_path / "r").exists()
    assert cli(["rl", f"--run_dir={tmp_path / 'r'}", "--env=arithmetc"]) == 2
    assert "unknown env" in capsys.readouterr().err and not (tmp_path / "r").exists()
