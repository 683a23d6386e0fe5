"""`hf:` environments on small local files written in the real datasets' formats: GSM8K
(parquet files per split, ``####`` golds), MATH (one JSONL, ``\\boxed{}`` solutions), and
a CSV with columns of other names.

Run: ``.venv/bin/python -m pytest tests/test_hf_env.py -q`` (CPU, seconds).
"""

import itertools
import json

import pytest

from rlvr.cli import main as cli
from rlvr.config import InputError
from rlvr.envs import make_env

datasets = pytest.importorskip("datasets")

GSM8K_TRAIN = [
    {"question": "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
                 "How many clips did Natalia sell altogether in April and May?",
     "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips "
               "altogether in April and May.\n#### 72"},
    {"question": "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting. "
                 "How much did she earn?",
     "answer": "Weng earns 12/60 = $<<12/60=0.2>>0.2 per minute.\nWorking 50 minutes, she earned 0.2 x 50 = "
               "$<<0.2*50=10>>10.\n#### 10"},
    {"question": "A factory makes 1,000 bolts a day for 2 days. How many bolts is that?",
     "answer": "1,000 x 2 = 2,000\n#### 2,000"},
    {"question": "Janet has 3 apples and buys 4 more. How many apples does she have?",  # also in test: dropped
     "answer": "3 + 4 = 7\n#### 7"},
]
GSM8K_TEST = [
    {"question": "Janet has 3 apples and buys 4 more. How many apples does she have?", "answer": "3 + 4 = 7\n#### 7"},
    {"question": "A robe takes 2 bolts of blue fiber and half that much white fiber. How many bolts in total "
                 "does it take?", "answer": "It takes 2/2=<<2/2=1>>1 bolt of white fiber\nSo the total amount of "
                                            "fabric is 2+1=<<2+1=3>>3 bolts of fabric\n#### 3"},
]
MATH = [
    {"problem": f"What is $\\frac{{{n}}}{{{2 * n}}}$ plus ${n}$?", "level": "Level 1", "type": "Prealgebra",
     "solution": f"We have $\\frac{{{n}}}{{{2 * n}}} = \\frac{{1}}{{2}}$, so the sum is "
                 f"$\\boxed{{{n}+\\frac{{1}}{{2}}}}$."}
    for n in range(1, 41)
]


@pytest.fixture
def gsm8k_dir(tmp_path):
    """GSM8K as the hub stores it: main/train-00000-of-00001.parquet and main/test-...parquet."""
    root = tmp_path / "gsm8k" / "main"
    root.mkdir(parents=True)
    datasets.Dataset.from_list(GSM8K_TRAIN).to_parquet(str(root / "train-00000-of-00001.parquet"))
    datasets.Dataset.from_list(GSM8K_TEST).to_parquet(str(root / "test-00000-of-00001.parquet"))
    return root


def all_of(env, split):
    return list(itertools.islice(env.problems(split, 0), len(env.by_split[split])))


def test_gsm8k_uses_its_own_splits_and_golds(gsm8k_dir):
    env = make_env(f"hf:{gsm8k_dir}")
    assert env.name == "main" and env.adapter == "gsm8k"
    train, held = all_of(env, "train"), all_of(env, "eval")
    assert sorted(p.answer for p in held) == ["3", "7"]  # the test split, as the dataset has it
    assert sorted(p.answer for p in train) == ["10", "2000", "72"]  # "1,000"-style golds without commas
    assert env.dropped == 1  # Janet's apples are held out, so not trained on
    assert "#### followed by the final answer" in train[0].prompt and "Natalia" in env.by_split["train"][0].prompt
    assert env.validate() == []
    p = next(p for p in train if p.answer == "2000")
    assert env.verify(p, "so 2000 bolts\n#### 2,000").correct and not env.verify(p, "#### 2001").correct
    named = make_env(f"hf:{gsm8k_dir}:name=gsm8k")
    assert named.name == "gsm8k" and all(p.env == "gsm8k" for p in all_of(named, "eval"))


def test_math_jsonl_with_boxed_solutions_is_hash_split(tmp_path):
    path = tmp_path / "math.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in MATH))
    env = make_env(f"hf:{path}:eval_fraction=0.25")
    assert env.name == "math" and env.adapter == "math"
    train, held = all_of(env, "train"), all_of(env, "eval")
    assert len(train) + len(held) == len(MATH) and held and train
    assert {env.canonical(p) for p in train}.isdisjoint(env.canonical(p) for p in held)
    p = next(p for p in train if p.answer == "3+\\frac{1}{2}")
    assert p.meta["level"] == "Level 1"
    assert env.verify(p, "#### 7/2").correct and env.verify(p, "#### 3.5").correct  # math-verify equivalence
    assert not env.verify(p, "#### 4").correct
    assert env.validate(10) == []


def test_column_mapping_and_other_formats(tmp_path):
    rows = [{"prompt_text": f"Add {a} and {a + 1}.", "target": str(2 * a + 1), "other": 0} for a in range(30)]
    csv = tmp_path / "sums.csv"
    datasets.Dataset.from_list(rows).to_csv(str(csv))
    env = make_env(f"hf:{csv}:question=prompt_text,answer=target")
    assert env.adapter == "plain" and env.name == "sums"
    p = next(env.problems("train", 0))
    assert env.verify(p, f"#### {p.answer}").correct
    arrow_dir = tmp_path / "saved"
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows[:20]),
                          "validation": datasets.Dataset.from_list(rows[20:])}).save_to_disk(str(arrow_dir))
    env = make_env({"name": f"hf:{arrow_dir}", "question": "prompt_text", "answer": "target"})
    assert len(env.by_split["eval"]) == 10 and len(env.by_split["train"]) == 20  # its validation split held out


@pytest.mark.parametrize("spec, message", [
    ("hf:{d}:question=nope", r"no column 'nope' for the question \(columns: \['question', 'answer'\]\)"),
    ("hf:{d}:adapter=latex", r"unknown adapter 'latex'; valid: auto, gsm8k, math, plain"),
    ("hf:{d}:adapter=math", r"adapter 'math' finds no gold in 'answer'"),
    ("hf:{d}:eval_split=dev", r"no split 'dev' \(it has \['test', 'train'\]\)"),
    ("hf:{d}:colour=red", r"unknown parameter\(s\) \['colour'\] for hf:"),
    ("hf:{d}/nothing.parquet", r"neither a local file or directory nor a hub id"),
    ("hf:", r"expected hf:SOURCE"),
])
def test_bad_specs_name_the_problem(gsm8k_dir, spec, message):
    with pytest.raises(InputError, match=message):
        make_env(spec.format(d=gsm8k_dir))


def test_rlvr_audit_reads_an_hf_env(gsm8k_dir, capsys):
    rc = cli(["audit", f"hf:{gsm8k_dir}", "--problems=2", "--answer_format=hashes"])
    out = capsys.readouterr().out
    assert rc == 0 and "gold (control)" in out and "FAIL" not in out
