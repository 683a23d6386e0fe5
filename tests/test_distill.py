"""`rlvr distill`: filters, provenance, a dataset HF `datasets` loads, resumption from the cache."""

import json

from rlvr.distill.distill import DistillConfig, keep, main
from rlvr.models import build_tiny_model, save_model
from rlvr.types import Verdict

RIGHT, WRONG = Verdict(1.0, True, 5), Verdict(0.0, False, 4)


def test_filters():
    scored = [("long right", RIGHT), ("wrong", WRONG), ("right", RIGHT), ("right", RIGHT)]
    assert keep(scored, "none") == [("long right", RIGHT), ("wrong", WRONG), ("right", RIGHT)]  # duplicate dropped
    assert keep(scored, "correct") == [("long right", RIGHT), ("right", RIGHT)]
    assert keep(scored, "best_of_k") == [("right", RIGHT)]  # the shortest of the best
    assert keep([("wrong", WRONG)], "best_of_k") == []


def test_distill_writes_a_dataset_and_resumes_from_the_cache(tmp_path):
    import datasets

    model, tok = build_tiny_model("micro", seed=0)
    save_model(model, tok, tmp_path / "teacher")
    cfg = DistillConfig(run_dir=str(tmp_path / "d"), teacher=str(tmp_path / "teacher"), problems=6, k=3,
                        filter="none", max_tokens=8, chunk=4,
                        env={"name": "arithmetic", "digits": 1, "ops": ["add"], "template": "{expr}"})
    first = main(cfg)
    assert first["requests"] == 6 and first["cache_hits"] == 0 and first["generated"] == 18
    rows = [json.loads(line) for line in (tmp_path / "d" / "data.jsonl").read_text().splitlines()]
    assert len(rows) == first["kept"] > 0
    row = rows[0]
    assert row["messages"][-1]["role"] == "assistant" and row["provenance"]["n"] == 3
    assert set(row["verdict"]) == {"reward", "correct", "parsed", "flags"}
    ds = datasets.load_dataset("json", data_files=str(tmp_path / "d" / "data.jsonl"), split="train")
    assert len(ds) == len(rows)
    again = main(cfg)  # a rerun (or a resumed kill) sends nothing that was answered
    assert again["cache_hits"] == 6 and again["kept"] == first["kept"]
