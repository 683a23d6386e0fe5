"""`hf:`: math problems from any dataset that Hugging Face `datasets` reads, graded like `math`.

    rlvr rl --env hf:openai/gsm8k:config=main            # a hub id (through the `datasets` cache)
    rlvr rl --env hf:EleutherAI/hendrycks_math:config=algebra
    rlvr rl --env hf:data/train.parquet:question=prompt,answer=target
    rlvr eval --env hf:data/gsm8k                        # a directory: one file per split, or save_to_disk

What it reads (`source`, the spec's part after ``hf:``): a hub id ``owner/name`` (with
`config` for the dataset's configuration), a local ``.parquet``, ``.jsonl``/``.json``,
``.csv`` or ``.arrow`` file, or a directory of such files (their names give the splits,
as `datasets` reads them: ``train-*.parquet``, ``test-*.parquet``) or one written by
`save_to_disk`.

The question and the answer are columns (`question=`, `answer=`; by default the first of
question/problem/prompt and of answer/solution/target that the data has). The gold is
read out of the answer column by an adapter (`adapter=`): ``gsm8k`` (the text after
``####``, commas of thousands dropped: GSM8K's worked answers), ``math`` (the last
``\\boxed{}``: MATH's solutions) or ``plain`` (the column as it is). ``auto`` (the
default) takes ``gsm8k`` when the first answer holds ``####``, ``math`` when it holds a
box, else ``plain``.

Splits: the dataset's own, when it has them (`train_split`, default ``train``;
`eval_split`, default the first of ``test`` and ``validation`` it has); a dataset with one
split is cut by a hash of each problem's text (`eval_fraction`), as `math` does. Either
way a train problem whose text is also held out is dropped. Grading is `math`'s:
``####`` answers, then math-verify equivalence (rlvr/envs/math_jsonl.py).

Run its tests: ``.venv/bin/python -m pytest tests/test_hf_env.py -q``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from rlvr.envs.math_jsonl import TEMPLATE, MathJSONL
from rlvr.verify.extract import extract_final
from rlvr.verify.formats import boxed_contents
from rlvr.verify.math_equiv import DEFAULT_TIMEOUT

PREFIX = "hf:"
QUESTION_COLUMNS = ("question", "problem", "prompt")
ANSWER_COLUMNS = ("answer", "solution", "target")
EVAL_SPLITS = ("test", "validation")
FILE_TYPES = {".parquet": "parquet", ".jsonl": "json", ".json": "json", ".csv": "csv", ".arrow": "arrow"}


def gsm8k_gold(text: str) -> str | None:
    """GSM8K's gold: what follows its one ``####`` ("... #### 1,200" -> "1200")."""
    answer, _ = extract_final(text)
    return answer.replace(",", "") if answer is not None else None


def math_gold(text: str) -> str | None:
    """MATH's gold: the last ``\\boxed{}`` of its solution."""
    boxes = boxed_contents(text)
    return boxes[-1] if boxes else None


ADAPTERS = {"gsm8k": gsm8k_gold, "math": math_gold, "plain": lambda text: text.strip() or None}


def guess_adapter(answer: str) -> str:
    if "####" in answer:
        return "gsm8k"
    return "math" if "\\boxed{" in answer else "plain"


class HFMath(MathJSONL):
    def __init__(self, source: str, config: str = "", question: str = "", answer: str = "", adapter: str = "auto",
                 train_split: str = "train", eval_split: str = "", name: str = "", template: str = TEMPLATE,
                 eval_fraction: float = 0.1, timeout: float = DEFAULT_TIMEOUT):
        if adapter != "auto" and adapter not in ADAPTERS:
            raise ValueError(f"unknown adapter {adapter!r}; valid: auto, {', '.join(ADAPTERS)}")
        self.name = name or _short_name(source)
        self.path = source
        splits = read_splits(source, config)
        if eval_split and eval_split not in splits:
            raise ValueError(f"{source}: no split {eval_split!r} (it has {sorted(splits)})")
        eval_split = eval_split or next((s for s in EVAL_SPLITS if s in splits), "")
        if train_split not in splits:
            if eval_split or len(splits) > 1:
                raise ValueError(f"{source}: no split {train_split!r} (it has {sorted(splits)}); set train_split")
            train_split = next(iter(splits))  # one split, whatever its name: hashed into train and eval
        first = splits[train_split]
        q_col, a_col = _column(first, question, QUESTION_COLUMNS, "question"), _column(first, answer, ANSWER_COLUMNS, "answer")
        if len(first) == 0:
            raise ValueError(f"{source}: split {train_split!r} is empty")
        self.adapter = guess_adapter(str(first[0][a_col])) if adapter == "auto" else adapter
        rows = []
        for split, label in ((train_split, "train"), (eval_split, "eval")):
            if not split:
                continue
            for i, row in enumerate(splits[split]):
                rows.append(self._row(row, q_col, a_col, f"{source}:{split}:{i}", f"{split}{i}",
                                      label if eval_split else None))
        self.load(rows, template, eval_fraction, timeout)

    def _row(self, row: dict, q_col: str, a_col: str, where: str, pid: str, split: str | None) -> dict:
        question, answer = row[q_col], row[a_col]
        if not isinstance(question, str) or not question.strip():
            raise ValueError(f"{where}: empty or missing {q_col!r}")
        if isinstance(answer, bool) or not isinstance(answer, (str, int, float)):
            raise ValueError(f"{where}: {a_col!r} is {answer!r}, not text or a number")
        gold = ADAPTERS[self.adapter](str(answer))
        if not gold:
            raise ValueError(f"{where}: adapter {self.adapter!r} finds no gold in {a_col!r}: {str(answer)[-80:]!r}")
        return {"problem": question, "answer": gold, "id": pid, "level": row.get("level"), "source": where,
                "split": split}


def read_splits(source: str, config: str = "") -> dict[str, Any]:
    """{split name: `datasets.Dataset`} of a hub id, a local file or a directory."""
    import datasets

    path = Path(source).expanduser()
    try:
        if path.is_file():
            kind = FILE_TYPES.get(path.suffix)
            if kind is None:
                raise ValueError(f"{source}: cannot read {path.suffix!r} files (valid: {', '.join(FILE_TYPES)})")
            data = datasets.load_dataset(kind, data_files=str(path))
        elif path.is_dir() and ((path / "dataset_dict.json").exists() or (path / "dataset_info.json").exists()):
            data = datasets.load_from_disk(str(path))
        elif path.is_dir() or re.fullmatch(r"[\w.-]+/[\w.-]+", source):
            data = datasets.load_dataset(str(path) if path.is_dir() else source, config or None)
        else:
            raise ValueError(f"{source!r} is neither a local file or directory nor a hub id (owner/name)")
    except (OSError, datasets.exceptions.DatasetNotFoundError) as e:  # missing, unreadable, offline
        raise ValueError(f"{source}: cannot load it ({str(e).splitlines()[0]})") from None
    return dict(data) if isinstance(data, datasets.DatasetDict) else {"train": data}


def _column(data, given: str, defaults: tuple[str, ...], what: str) -> str:
    if given:
        if given not in data.column_names:
            raise ValueError(f"no column {given!r} for the {what} (columns: {data.column_names})")
        return given
    found = next((c for c in defaults if c in data.column_names), None)
    if found is None:
        raise ValueError(f"no {what} column among {data.column_names}: set {what}=COLUMN")
    return found


def _short_name(source: str) -> str:
    """gsm8k for openai/gsm8k, train for data/train.parquet: what metrics and problem ids are keyed by."""
    path = Path(source.rstrip("/"))
    return (path.stem if path.suffix else path.name).lower() or "hf"


def make_hf_env(spec: str | dict[str, Any]) -> HFMath:
    """``"hf:SOURCE"``, ``"hf:SOURCE:key=value,..."`` or ``{"name": "hf:SOURCE", key: value}``.
    A local path holding ':' needs the dict form."""
    import inspect

    from rlvr.envs import _key_values

    if isinstance(spec, dict):
        params = dict(spec)
        source = str(params.pop("name"))[len(PREFIX):]
    else:
        source, _, rest = spec[len(PREFIX):].partition(":")
        params = _key_values(spec, rest)
        for key in ("eval_fraction", "timeout"):
            if key in params:
                params[key] = float(params[key])
    if not source:
        raise ValueError(f"env spec {spec!r}: expected hf:SOURCE (a hub id or a local file or directory)")
    valid = [k for k in inspect.signature(HFMath).parameters if k != "source"]
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown} for hf:; valid: {valid}")
    return HFMath(source, **params)
