"""`--wandb` mirrors metrics.jsonl to a Weights & Biases run, as `--tensorboard` does, read
back here from the offline run file that `wandb sync` would upload (no network).

Run: ``.venv/bin/python -m pytest tests/test_wandb.py -q`` (CPU, ~20 s: W&B starts a service).
"""

import json
import struct

import pytest

from conftest import ENV
from rlvr.train import pretrain

wandb = pytest.importorskip("wandb")


def history(path) -> list[dict]:
    """The history rows of an offline .wandb file: a LevelDB-style log (a 7-byte header,
    32 KiB blocks of records: crc32, length, kind: 1 full, 2 first, 3 middle, 4 last) of
    protobuf `Record`s."""
    from wandb.proto import wandb_internal_pb2 as pb

    raw, pos, block, records, buf = path.read_bytes(), 7, 32768, [], b""
    assert raw[:4] == b":W&B"
    while pos + 7 <= len(raw):
        left = block - pos % block
        _, n, kind = struct.unpack("<IHB", raw[pos:pos + 7])
        if left < 7 or (kind == 0 and n == 0):  # the block's zero-filled tail
            pos += left
            continue
        data, pos = raw[pos + 7:pos + 7 + n], pos + 7 + n
        buf = data if kind in (1, 2) else buf + data
        if kind in (1, 4):
            records.append(buf)
    rows = []
    for data in records:
        record = pb.Record()
        record.ParseFromString(data)
        if record.WhichOneof("record_type") == "history":
            rows.append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item})
    return rows


def test_wandb_mirrors_the_metrics(tmp_path, monkeypatch):
    for var in ("DIR", "CACHE_DIR", "CONFIG_DIR", "DATA_DIR"):
        monkeypatch.setenv(f"WANDB_{var}", str(tmp_path / "wandb-home"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = pretrain.main(pretrain.PretrainConfig(run_dir=str(tmp_path / "pre"), env=ENV, preset="micro", steps=3,
                                                batch_size=8, check_every=0, wandb=True, wandb_project="test"))
    metrics = [json.loads(line) for line in (run.dir / "metrics.jsonl").read_text().splitlines()]
    [offline] = (run.dir / "wandb").glob("offline-run-*/run-*.wandb")
    run_id = (run.dir / "wandb_id").read_text().strip()
    assert offline.name == f"run-{run_id}.wandb"
    rows = history(offline)
    assert [r["_step"] for r in rows] == [m["step"] for m in metrics]
    assert [r["loss"] for r in rows] == pytest.approx([m["loss"] for m in metrics])
    assert [r["compute/flops"] for r in rows] == pytest.approx([m["compute/flops"] for m in metrics])
