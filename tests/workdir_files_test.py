"""Workdir files: atomic writes, appends (local and object-store style), JSON reads."""

import json

import pytest

from gecko_jax import workdir_files


@pytest.mark.parametrize("local", [True, False])
def test_append_line_creates_then_appends(tmp_path, monkeypatch, local):
    # An object store cannot append; the remote branch rewrites the object.
    monkeypatch.setattr(workdir_files, "_is_local", lambda _: local)
    target = tmp_path / "run" / "metrics.jsonl"
    if not local:
        target.parent.mkdir()
    workdir_files.append_line(target, '{"step": 1}')
    workdir_files.append_line(target, '{"step": 2}')
    assert [json.loads(line)["step"] for line in target.read_text().splitlines()] == [1, 2]


def test_write_text_atomic_replaces_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "deep" / "config.json"
    workdir_files.write_text_atomic(target, "old")
    workdir_files.write_text_atomic(target, "new")
    assert target.read_text() == "new"
    assert sorted(p.name for p in target.parent.iterdir()) == ["config.json"]


def test_read_json_and_remove_tree(tmp_path):
    assert workdir_files.read_json(tmp_path / "missing.json") is None
    (tmp_path / "a.json").write_text('{"value": 0.5}')
    assert workdir_files.read_json(tmp_path / "a.json") == {"value": 0.5}
    (tmp_path / "tree" / "sub").mkdir(parents=True)
    (tmp_path / "tree" / "sub" / "f").write_text("x")
    workdir_files.remove_tree(tmp_path / "tree")
    workdir_files.remove_tree(tmp_path / "tree")
    assert not (tmp_path / "tree").exists()
