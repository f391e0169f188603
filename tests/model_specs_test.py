"""One rule for model specs: what `models.specs.resolve` tells apart, and what it refuses."""

import json

import pytest

from gecko_jax.errors import UserError
from gecko_jax.models import specs


def test_each_form_resolves_to_its_kind(tmp_path):
    st_folder = tmp_path / "st"
    st_folder.mkdir()
    (st_folder / "modules.json").write_text("[]")
    hf_folder = tmp_path / "hf"
    hf_folder.mkdir()
    (hf_folder / "config.json").write_text(json.dumps({"model_type": "bert"}))
    workdir = tmp_path / "run"
    workdir.mkdir()
    (workdir / "config.json").write_text(json.dumps({"model": {}, "data": {}}))
    assert specs.resolve("minilm") == specs.ModelSpec(specs.SENTENCE_TRANSFORMERS, "minilm", "")
    assert specs.resolve(f"st:{st_folder}").kind == specs.SENTENCE_TRANSFORMERS
    assert specs.resolve("gemma3-270m").kind == specs.GEMMA
    assert specs.resolve("gguf:/x/model.gguf") == specs.ModelSpec(specs.GEMMA, "gguf:/x/model.gguf", "")
    assert specs.resolve(str(st_folder)) == specs.ModelSpec(specs.BERT_FOLDER, str(st_folder), str(st_folder))
    assert specs.resolve(str(hf_folder)).kind == specs.BERT_FOLDER
    assert specs.resolve(str(workdir)) == specs.ModelSpec(specs.WORKDIR, str(workdir), str(workdir))


@pytest.mark.parametrize("spec", ["", "st:", "bow", "/no/such/folder", "runs/missing"])
def test_anything_else_is_refused_in_one_line(spec):
    with pytest.raises(UserError, match=r"^Unknown model .*; use 'minilm'.* or a training workdir\.$"):
        specs.resolve(spec)
