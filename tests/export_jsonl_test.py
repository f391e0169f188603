"""data_pipelines/export_jsonl.py writes sources that read back as training JSONL."""

import pathlib
import subprocess
import sys

from gecko_jax.data import jsonl, sources

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_tiny_source_round_trips(tmp_path):
    subprocess.run(
        [
            sys.executable,
            str(REPO / "data_pipelines" / "export_jsonl.py"),
            "--sources=tiny",
            f"--output={tmp_path}/train",
            "--num_shards=2",
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    shards = sorted(tmp_path.glob("train-*-of-00002.jsonl"))
    assert len(shards) == 2
    written = [e for shard in shards for e in jsonl.read_jsonl(str(shard))]
    original = sources.tiny()
    assert sorted(e["id"] for e in written) == sorted(e["id"] for e in original)
    by_id = {e["id"]: e for e in written}
    for example in original:
        assert by_id[example["id"]]["query"] == example["query"]
        assert by_id[example["id"]]["positive"] == example["positive"]
