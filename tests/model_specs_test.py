"""One rule for model specs: what `models.specs.resolve` tells apart, and what it refuses.

`Encoder.load`, `LanguageModel.load` and FRet's checks of its flags all go
through it, so they accept the same specs and refuse a bad one with the same
one-line message.
"""

import json
import re

import pytest

from gecko_jax.encoder import Encoder
from gecko_jax.errors import UserError
from gecko_jax.fret import model_specs
from gecko_jax.fret.stages import LLMOptions
from gecko_jax.language_model import LanguageModel
from gecko_jax.models import specs

_GEMMA_HELP = r"use 'gemma3-270m', 'gguf:PATH' \(a \.gguf file\), 'hf:PATH' or an HF Gemma folder\.$"


@pytest.fixture(name="paths")
def _paths(tmp_path):
    """A model file or folder of each kind (files of the right kind, no weights), by name."""
    paths = {name: tmp_path / name for name in ("st_folder", "hf_folder", "gemma_folder", "workdir")}
    for path in paths.values():
        path.mkdir()
    (paths["st_folder"] / "modules.json").write_text("[]")
    (paths["hf_folder"] / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (paths["gemma_folder"] / "config.json").write_text(json.dumps({"model_type": "gemma3_text"}))
    (paths["workdir"] / "config.json").write_text(json.dumps({"model": {}, "data": {}}))
    paths["gguf"] = tmp_path / "model.gguf"
    paths["gguf"].write_bytes(b"")
    return {name: str(path) for name, path in paths.items()}


@pytest.fixture(name="forms")
def _forms(paths):
    """One spec of each accepted form, with what it resolves to."""
    st_folder, gemma_folder = paths["st_folder"], paths["gemma_folder"]
    return {
        "minilm": specs.ModelSpec(specs.SENTENCE_TRANSFORMERS, "minilm", ""),
        f"st:{st_folder}": specs.ModelSpec(specs.SENTENCE_TRANSFORMERS, f"st:{st_folder}", st_folder),
        "gemma3-270m": specs.ModelSpec(specs.GEMMA, "gemma3-270m", ""),
        f"gguf:{paths['gguf']}": specs.ModelSpec(specs.GEMMA, f"gguf:{paths['gguf']}", ""),
        f"hf:{gemma_folder}": specs.ModelSpec(specs.GEMMA, f"hf:{gemma_folder}", gemma_folder),
        gemma_folder: specs.ModelSpec(specs.GEMMA, f"hf:{gemma_folder}", gemma_folder),
        st_folder: specs.ModelSpec(specs.BERT_FOLDER, st_folder, st_folder),
        paths["hf_folder"]: specs.ModelSpec(specs.BERT_FOLDER, paths["hf_folder"], paths["hf_folder"]),
        paths["workdir"]: specs.ModelSpec(specs.WORKDIR, paths["workdir"], paths["workdir"]),
    }


def test_each_form_resolves_to_its_kind(forms):
    for spec, expected in forms.items():
        assert specs.resolve(spec) == expected, spec


# Each bad spec with what its one-line refusal says before the list of forms.
BAD_SPECS = [
    ("", r"Unknown model ''"),
    ("st:", r"Unknown model 'st:'"),
    ("bow", r"Unknown model 'bow'"),
    ("/no/such/folder", r"Unknown model '/no/such/folder'"),
    ("runs/missing", r"Unknown model 'runs/missing'"),
    ("st:/no/such/folder", r"Model 'st:/no/such/folder': no folder '/no/such/folder'"),
    ("hf:/no/such/folder", r"Model 'hf:/no/such/folder': no folder '/no/such/folder'"),
    ("gguf:/no/such.gguf", r"Model 'gguf:/no/such.gguf': no file '/no/such.gguf'"),
]


@pytest.mark.parametrize("spec, problem", BAD_SPECS)
def test_anything_else_is_refused_in_one_line(spec, problem):
    with pytest.raises(UserError, match=rf"^{problem}; use 'minilm'.* or a training workdir\.$"):
        specs.resolve(spec)


def test_a_prefixed_path_of_the_wrong_kind_is_refused(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(UserError, match=r"^Model 'st:.*/file': no folder '.*/file'; use 'minilm'"):
        specs.resolve(f"st:{tmp_path / 'file'}")
    with pytest.raises(UserError, match=r"^Model 'gguf:.*': no file '.*'; use 'minilm'"):
        specs.resolve(f"gguf:{tmp_path}")


def test_fret_embedder_check_accepts_every_form_encoder_load_accepts(forms):
    for spec in forms:
        model_specs.check_embedder(spec)


@pytest.mark.parametrize("spec", [spec for spec, _ in BAD_SPECS] + ["EMPTY_FOLDER"])
def test_fret_embedder_check_refuses_what_encoder_load_refuses_with_its_message(spec, tmp_path):
    spec = str(tmp_path) if spec == "EMPTY_FOLDER" else spec
    with pytest.raises(UserError) as refused_by_encoder:
        Encoder.load(spec)
    with pytest.raises(UserError) as refused_by_fret:
        model_specs.check_embedder(spec)
    assert str(refused_by_fret.value) == str(refused_by_encoder.value)
    assert "\n" not in str(refused_by_fret.value)


@pytest.mark.parametrize(
    "spec, kind",
    [
        ("minilm", r"a sentence-transformers \(BERT\) model"),
        ("st:{st_folder}", r"a sentence-transformers \(BERT\) model"),
        ("{st_folder}", "a sentence-transformers or HF BERT folder"),
        ("{hf_folder}", "a sentence-transformers or HF BERT folder"),
        ("{workdir}", "a training workdir"),
    ],
)
def test_language_model_refuses_what_is_no_gemma_in_one_line(paths, spec, kind):
    spec = spec.format(**paths)
    refusal = rf"^Model '{re.escape(spec)}' is {kind}, not a Gemma language model; "
    with pytest.raises(UserError, match=refusal + _GEMMA_HELP):
        LanguageModel.load(spec)
    # FRet's LLM check refuses it the same way, naming the HTTP forms too.
    with pytest.raises(UserError, match=refusal + r"use 'gemma3-270m'.*'gemini:MODEL\[@BASE_URL\]'\.$"):
        model_specs.check_llm(LLMOptions(spec))


@pytest.mark.parametrize(
    "spec, problem",
    [
        ("gpt2", r"Unknown model 'gpt2'"),
        ("hf:/no/such/folder", r"Model 'hf:/no/such/folder': no folder '/no/such/folder'"),
        ("gguf:/no/such.gguf", r"Model 'gguf:/no/such.gguf': no file '/no/such.gguf'"),
    ],
)
def test_language_model_refuses_unknown_and_missing_specs_in_one_line(spec, problem):
    with pytest.raises(UserError, match=rf"^{problem}; {_GEMMA_HELP}"):
        LanguageModel.load(spec)


def test_fret_llm_check_accepts_the_gemma_forms(forms):
    for spec, model in forms.items():
        if model.kind == specs.GEMMA:
            model_specs.check_llm(LLMOptions(spec))
