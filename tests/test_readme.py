"""Every `rlvr ...` command the README, the docs and the modules' docstrings show parses.

Each command line in a fenced code block of README.md, EXPERIMENTS.md, BENCHMARKS.md and
docs/*.md, and each indented one in a module docstring under rlvr/ (what `--help` prints) (`rlvr ...` or `.venv/bin/rlvr ...`, after any `VAR=value` prefixes, `\\`
continuations joined, `# comments` cut) goes through the CLI's own parsing: the command
and experiment names, positional arguments, the recipe, `--key=value` overrides and the
config's validation. Only the command's function is replaced, so nothing runs. A
recipe named without a directory (`recipe.yaml`) is a placeholder and is written empty;
one with a directory must exist in the repository.

    pytest -q tests/test_readme.py
"""

from __future__ import annotations

import ast
import re
import shlex
from pathlib import Path

import pytest

from rlvr import cli

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", ROOT / "EXPERIMENTS.md", ROOT / "BENCHMARKS.md", *sorted((ROOT / "docs").glob("*.md"))]
COMMAND = re.compile(r"^(?:[A-Z_][A-Z0-9_]*=\S*\s+)*(?:\.venv/bin/)?rlvr(?:\s|$)")


def shown_commands(page: Path) -> list[tuple[int, str]]:
    """(line number, command) of every `rlvr` command in the page's fenced code blocks; a
    block fenced as ```text shows output, not commands."""
    out, in_block, output, pending = [], False, False, None
    for number, line in enumerate(page.read_text().splitlines(), 1):
        if line.lstrip().startswith("```"):
            in_block, pending = not in_block, None
            output = in_block and line.strip()[3:].strip() == "text"
            continue
        if not in_block or output:
            continue
        if pending is not None:
            pending = (pending[0], pending[1] + " " + line.strip())
        elif COMMAND.match(line.strip()):
            pending = (number, line.strip())
        else:
            continue
        if pending[1].endswith("\\"):
            pending = (pending[0], pending[1][:-1])
        else:
            out.append(pending)
            pending = None
    return out


def docstring_commands(module: Path) -> list[tuple[int, str]]:
    """(line number, command) of every `rlvr` command line in the module's docstring; what
    follows two spaces or more is the line's description."""
    tree = ast.parse(module.read_text())
    doc = ast.get_docstring(tree, clean=False)
    if not doc:
        return []
    first = tree.body[0].lineno
    out = []
    for offset, line in enumerate(doc.splitlines()):
        if line.startswith("    ") and COMMAND.match(line.strip()) and not line.rstrip().endswith("\\"):
            command = re.split(r"\s{2,}|\s&&\s|\s\|\s", line.strip())[0]  # a description, a shell's next command
            out.append((first + offset, command.removesuffix(" &")))
    return out


CASES = [(page, number, command) for page in PAGES if page.exists() for number, command in shown_commands(page)]
CASES += [(module, number, command) for module in sorted((ROOT / "rlvr").rglob("*.py"))
          for number, command in docstring_commands(module)]


def argv_of(command: str) -> list[str]:
    words = shlex.split(command, comments=True)
    while words and "=" in words[0] and not words[0].startswith("-"):
        words.pop(0)  # VAR=value before the command
    assert words[0].endswith("rlvr"), command
    return words[1:]


@pytest.fixture
def parse_only(monkeypatch):
    """The CLI with every command's function replaced by one that records its config."""
    seen: list = []

    def recording(table):
        def entries():
            return {name: (cls, lambda cfg: seen.append(cfg), help_) for name, (cls, _, help_) in table().items()}
        return entries

    monkeypatch.setattr(cli, "_commands", recording(cli._commands))
    monkeypatch.setattr(cli, "_experiments", recording(cli._experiments))
    return seen


def test_every_part_of_the_docs_shows_a_command():
    shown = {page.name for page, _, _ in CASES}
    parts = {"README.md", "EXPERIMENTS.md", "environments.md", "rl.md", "distillation.md", "self-improvement.md",
             "models.md", "compute.md", "experiments.md"}
    assert parts <= shown, f"no rlvr command shown in {sorted(parts - shown)}"


@pytest.mark.parametrize("page,number,command", CASES,
                         ids=[f"{p.relative_to(ROOT)}:{n}" for p, n, _ in CASES])
def test_every_shown_command_parses(page, number, command, parse_only, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    argv = argv_of(command)
    for i, word in enumerate(argv):
        if word.endswith((".yaml", ".yml")) and not word.startswith("--"):
            if (ROOT / word).exists():
                argv[i] = str(ROOT / word)
            else:
                assert "/" not in word, f"{page.name}:{number}: recipe {word} is not in the repository"
                Path(word).write_text("{}\n")  # a placeholder recipe: the command line is what is checked
    if "--resume" in argv:  # a resume names a run that exists: make its directory
        at = next(i for i, w in enumerate(argv) if w.split("=")[0] == "--run_dir")
        Path(argv[at].split("=", 1)[1] if "=" in argv[at] else argv[at + 1]).mkdir(parents=True)
    code = cli.main(argv)
    err = capsys.readouterr().err
    assert code == 0, f"{page.name}:{number}: `{command}` does not parse: {err.strip()}"
    if not {"--help", "-h", "--version"} & set(argv):
        assert len(parse_only) == 1, f"{page.name}:{number}: `{command}` reached no command"
