"""Configuration: one pydantic class per command, a YAML recipe, `--key=value` overrides.

Every field is documented once, in its class; `rlvr CMD --help` prints those docs.
Unknown keys and bad values fail at start with the key named (and the recipe's file
and line when it came from one), so a typo never silently becomes a default.

    cfg = load_config(RLConfig, recipe="recipes/demo.yaml", overrides=["--lr=1e-4"])
"""

from __future__ import annotations

import difflib
import sys
from pathlib import Path
from typing import Any, ClassVar, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())
    # `--help`'s heading over the keys a command inherits (the trainers': "shared by every trainer").
    shared_heading: ClassVar[str] = "shared with other commands"


class InputError(ValueError):
    """Bad input (a key, a file, a line) named in the message: the CLI prints it as one
    line without a traceback. Bugs are other exceptions and keep theirs."""


class ConfigError(InputError):
    pass


def _recipe_lines(path: Path) -> tuple[dict[str, Any], dict[str, int]]:
    """Load a YAML mapping and the line of each top-level key (for error messages)."""
    text = path.read_text()
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a recipe must be a mapping of key: value")
    lines = {k.value: k.start_mark.line + 1 for k, _ in node.value} if node is not None else {}
    return data, lines


def parse_overrides(args: list[str]) -> dict[str, Any]:
    """`--key=value` / `--key value` / `--flag` -> {key: YAML-parsed value}. A bare `--` is
    skipped: under torchrun it ends torchrun's own options (whose prefixes, e.g. `--n` of
    `--nnodes`, its parser would otherwise claim)."""
    out: dict[str, Any] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            i += 1
            continue
        if not arg.startswith("--"):
            raise ConfigError(f"unexpected argument {arg!r}: options look like --key=value")
        key, eq, value = arg[2:].partition("=")
        if not eq:
            if i + 1 < len(args) and not args[i + 1].startswith("--"):
                value, i = args[i + 1], i + 1
            else:
                value = "true"
        try:
            out[key.replace("-", "_")] = yaml.safe_load(value) if value != "" else ""
        except yaml.YAMLError as e:
            raise ConfigError(f"command line: --{key}: {value!r} is not a value YAML reads "
                              f"({str(e).splitlines()[0]}); quote lists, e.g. --{key}='[1, 2]'") from None
        i += 1
    return out


def load_config(cls: type[Config], recipe: str | Path | None = None,
                overrides: list[str] | dict[str, Any] | None = None) -> Config:
    data: dict[str, Any] = {}
    where: dict[str, str] = {}
    if recipe is not None:
        path = Path(recipe)
        if not path.exists():
            raise ConfigError(f"recipe {str(path)!r} does not exist")
        data, lines = _recipe_lines(path)
        where = {k: f"{path}:{line}" for k, line in lines.items()}
    over = overrides if isinstance(overrides, dict) else parse_overrides(overrides or [])
    fields = cls.model_fields
    for key, value in over.items():  # a list key takes "a,b,c" as the seeds do (--lags 0,4) or one value
        if key in fields and get_origin(fields[key].annotation) is list and not isinstance(value, list):
            over[key] = [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else [value]
    data.update(over)
    where.update({k: "command line" for k in over})
    data, where = _resumed(cls, data, where)
    for key in data:
        if key not in fields:
            hint = difflib.get_close_matches(key, fields, n=1)
            raise ConfigError(f"{where.get(key, 'config')}: unknown key {key!r}"
                              + (f" (did you mean {hint[0]!r}?)" if hint else "")
                              + "; `rlvr ... --help` lists the keys")
    try:
        return cls(**data)
    except ValidationError as e:
        msgs = []
        for err in e.errors():
            key = ".".join(str(x) for x in err["loc"])
            top = str(err["loc"][0]) if err["loc"] else ""
            if err["type"] == "missing" and top in fields:  # say what to pass, not what pydantic missed
                how = "it first on the command line, or " if getattr(cls, "positional", None) == top else ""
                msgs.append(f"missing {top!r}: pass {how}--{top}=... ({fields[top].description})")
                continue
            msg = err["msg"].removeprefix("Value error, ")  # a validator's own sentence, as it wrote it
            msgs.append(f"{where.get(top, 'config')}: key {key!r}: {msg} (got {err.get('input')!r})")
        raise ConfigError("\n".join(msgs)) from None


def _resumed(cls: type[Config], data: dict[str, Any], where: dict[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """Under ``--resume``, the run's own config.yaml is the base: a resumed run continues
    with the settings it started with, and what is given again (a recipe, the command
    line) overrides them, each change said on stderr (``--steps`` to extend a run)."""
    if "resume" not in cls.model_fields or data.get("resume") is not True:
        return data, where
    run_dir = Path(data.get("run_dir") or cls.model_fields["run_dir"].default or "")
    saved_path = run_dir / "config.yaml"
    if not run_dir.is_dir():
        raise ConfigError(f"--resume: run directory {str(run_dir)!r} does not exist (give the --run_dir of the "
                          "run to continue)")
    if not saved_path.is_file():
        return data, where
    saved, _ = _recipe_lines(saved_path)
    saved = {k: v for k, v in saved.items() if k in cls.model_fields}
    for key in sorted(k for k in data if k in saved and k != "resume" and data[k] != saved[k]):
        print(f"resuming {saved_path.parent} with {key} = {data[key]!r} ({where.get(key, 'given')}; "
              f"it ran with {saved[key]!r})", file=sys.stderr)
    return {**saved, **data}, {**{k: str(saved_path) for k in saved}, **where}


def describe(cls: type[Config]) -> str:
    """The `--help` text: every key with its type, default and documentation; the
    command's own keys first, then those it shares with other commands (a base class's)."""
    own = [n for n in cls.model_fields if n in cls.__annotations__ and n not in _inherited(cls)]
    shared = [n for n in cls.model_fields if n not in own]
    rows = [_key_help(cls, n) for n in own]
    if shared:
        rows.append(f"\n  {cls.shared_heading}:" if own else "")
        rows += [_key_help(cls, n) for n in shared]
    return "\n".join(rows)


def _inherited(cls: type) -> set[str]:
    return {n for base in cls.__mro__[1:] for n in getattr(base, "model_fields", {}) if base is not Config}


def _key_help(cls: type[Config], name: str) -> str:
    f = cls.model_fields[name]
    typ = getattr(f.annotation, "__name__", str(f.annotation)).replace("typing.", "")
    if f.is_required():
        return f"  --{name}=...  [{typ}, required]\n      {f.description or ''}"
    default = f.default if f.default_factory is None else f.default_factory()
    return f"  --{name}={default!r}  [{typ}]\n      {f.description or ''}"


def to_yaml(cfg: Config) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
