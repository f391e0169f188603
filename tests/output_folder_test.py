"""Output folders (export, soup): bad places are one-line errors, and nothing half-written."""

import os

import pytest

from gecko_jax import output_folder
from gecko_jax.errors import UserError


def test_a_path_under_a_file_says_so(tmp_path):
    (tmp_path / "model.bin").write_text("x")
    with pytest.raises(UserError, match="model.bin is a file, not a folder"):
        output_folder.check_new(str(tmp_path / "model.bin" / "export"))


def test_missing_parent_and_non_empty_output(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        output_folder.check_new(str(tmp_path / "no" / "export"))
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "f").write_text("x")
    with pytest.raises(UserError, match="already exists and is not empty"):
        output_folder.check_new(str(tmp_path / "full"))
    output_folder.check_new(str(tmp_path / "new"))


def test_an_unwritable_parent_is_one_line(tmp_path, monkeypatch):
    def refuse(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(os, "makedirs", refuse)
    with pytest.raises(UserError, match="cannot write in .*Permission denied"):
        with output_folder.written_whole(str(tmp_path / "export")):
            pass
    assert not list(tmp_path.iterdir())
