"""Tests for gecko_jax.models.bert_import against transformers and ST."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from flax import linen as nn

from gecko_jax.data.packing import pack
from gecko_jax.data.vocabularies import get_vocabulary
from gecko_jax.encoder import Encoder
from gecko_jax.errors import UserError
from gecko_jax.models import bert_import
from gecko_jax.models.registry import build_tower

LETTERS = "abcdefghijklmnopqrstuvwxyz"
VOCAB = (
    ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    + "the cat dog sat on mat . , ! ? is was hello world".split()
    + list(LETTERS)
    + ["##" + c for c in LETTERS]
)
SENTENCES = [
    "The cat sat on the mat.",
    "Hello, world!",
    "a dog",
    "zebras were quickly jumping over the lazy dogs, again and again",
]


def _tokenize(vocab, texts, length):
    return pack([vocab.encode(t) for t in texts], length, vocab.bos_id, vocab.eos_id, vocab.pad_id)


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
    """A tiny random BertModel saved the way transformers saves it."""
    folder = tmp_path_factory.mktemp("tiny_bert")
    (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    config = transformers.BertConfig(
        vocab_size=len(VOCAB),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=40,
    )
    torch.manual_seed(0)
    model = transformers.BertModel(config).eval()
    with torch.no_grad():
        # Default LayerNorm/bias inits are constants; random values make a
        # swapped or transposed tensor show up.
        for param in model.parameters():
            param.add_(0.1 * torch.randn_like(param))
    model.save_pretrained(folder)
    transformers.BertTokenizer(str(folder / "vocab.txt")).save_pretrained(folder)
    return str(folder)


def test_hf_folder_matches_transformers(hf_folder):
    imported = bert_import.load_bert_folder(hf_folder)
    config = imported.model_config
    assert (config.pooling, config.normalize, config.projection_dim) == ("mean", False, 0)
    assert config.vocab == f"wordpiece:{hf_folder}/vocab.txt"
    assert config.init == f"st:{hf_folder}"
    assert imported.max_length == 40

    tower = build_tower(config)
    ids, mask = _tokenize(get_vocabulary(config.vocab), SENTENCES, 40)
    ref_model = transformers.BertModel.from_pretrained(hf_folder).eval()
    with torch.no_grad():
        ref = ref_model(
            input_ids=torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(mask)
        ).last_hidden_state.numpy()
    hidden = jax.jit(tower.backbone.apply)({"params": imported.params["backbone"]}, ids, mask)
    real = mask.astype(bool)
    np.testing.assert_allclose(np.asarray(hidden)[real], ref[real], atol=1e-5)

    pooled = jax.jit(tower.apply)({"params": imported.params}, ids, mask)
    ref_mean = (ref * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
    np.testing.assert_allclose(pooled, ref_mean, atol=1e-5)


def test_st_folder_with_dense_head_matches_sentence_transformers(hf_folder, tmp_path):
    from sentence_transformers import SentenceTransformer  # pylint: disable=g-import-not-at-top
    from sentence_transformers.sentence_transformer import modules  # pylint: disable=g-import-not-at-top

    torch.manual_seed(1)
    st = SentenceTransformer(
        modules=[
            modules.Transformer(hf_folder, max_seq_length=12),
            modules.Pooling(32, pooling_mode="cls"),
            modules.Dense(32, 8, bias=False, activation_function=torch.nn.Identity()),
            modules.Normalize(),
        ],
        device="cpu",
    )
    st.save(str(tmp_path))
    imported = bert_import.load_bert_folder(str(tmp_path))
    config = imported.model_config
    assert (config.pooling, config.normalize, config.projection_dim) == ("cls", True, 8)
    assert imported.max_length == 12  # the long sentence gets truncated
    ours = Encoder.load(f"st:{tmp_path}", batch_size=4).encode(SENTENCES)
    np.testing.assert_allclose(ours, st.encode(SENTENCES), atol=1e-5)


def test_minilm_params_match_a_fresh_tower():
    imported = bert_import.resolve_pretrained("minilm")
    assert imported.max_length == 256
    config = imported.model_config
    assert (config.init, config.vocab, config.pooling, config.normalize) == ("minilm", "minilm", "mean", True)
    tower = build_tower(config)
    ids = jnp.ones((1, 4), jnp.int32)
    abstract = nn.unbox(jax.eval_shape(tower.init, jax.random.key(0), ids, ids))
    assert jax.tree.structure(abstract["params"]) == jax.tree.structure(imported.params)
    for want, got in zip(jax.tree.leaves(abstract["params"]), jax.tree.leaves(imported.params)):
        assert (want.shape, want.dtype) == (got.shape, got.dtype)


def test_merge_pretrained_keeps_new_leaves_and_boxes():
    init = {
        "backbone": {"w": nn.LogicallyPartitioned(np.zeros((2, 3), np.float32), ("embed", "mlp"))},
        "projection": {"kernel": np.ones((3, 4), np.float32)},
    }
    merged = bert_import.merge_pretrained(init, {"backbone": {"w": np.full((2, 3), 7.0, np.float64)}})
    box = merged["backbone"]["w"]
    assert isinstance(box, nn.LogicallyPartitioned) and box.names == ("embed", "mlp")
    np.testing.assert_array_equal(box.value, np.full((2, 3), 7.0))
    assert box.value.dtype == np.float32
    np.testing.assert_array_equal(merged["projection"]["kernel"], np.ones((3, 4)))

    abstract = {"w": jax.ShapeDtypeStruct((2,), jnp.float32)}
    merged = bert_import.merge_pretrained(abstract, {"w": np.ones(2, np.float64)})
    assert merged["w"].dtype == np.float32
    with pytest.raises(UserError, match="backbone/w has shape"):
        bert_import.merge_pretrained(init, {"backbone": {"w": np.zeros((3, 2))}})
    with pytest.raises(UserError, match="backbone/v does not exist"):
        bert_import.merge_pretrained(init, {"backbone": {"v": np.zeros(1)}})


def _copy_folder(src, dst, skip=()):
    os.makedirs(dst, exist_ok=True)
    for name in os.listdir(src):
        if name not in skip:
            with open(os.path.join(src, name), "rb") as f:
                data = f.read()
            with open(os.path.join(dst, name), "wb") as f:
                f.write(data)
    return str(dst)


def test_user_errors(hf_folder, tmp_path):
    with pytest.raises(UserError, match="not a directory"):
        bert_import.load_bert_folder(str(tmp_path / "missing"))
    with pytest.raises(UserError, match="Unknown pretrained model"):
        bert_import.resolve_pretrained("gpt2")

    no_weights = _copy_folder(hf_folder, tmp_path / "bin", skip=("model.safetensors",))
    open(os.path.join(no_weights, "pytorch_model.bin"), "wb").close()
    with pytest.raises(UserError, match="safe_serialization"):
        bert_import.load_bert_folder(no_weights)

    no_vocab = _copy_folder(hf_folder, tmp_path / "novocab", skip=("vocab.txt", "tokenizer.json"))
    with pytest.raises(UserError, match="vocab.txt"):
        bert_import.load_bert_folder(no_vocab)

    roberta = _copy_folder(hf_folder, tmp_path / "roberta")
    config_path = os.path.join(roberta, "config.json")
    with open(config_path) as f:
        config = json.load(f)
    config["model_type"] = "roberta"
    with open(config_path, "w") as f:
        json.dump(config, f)
    with pytest.raises(UserError, match="not a supported BERT model"):
        bert_import.load_bert_folder(roberta)

    max_pooling = _copy_folder(hf_folder, tmp_path / "maxpool")
    os.makedirs(os.path.join(max_pooling, "1_Pooling"))
    with open(os.path.join(max_pooling, "modules.json"), "w") as f:
        json.dump(
            [
                {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            ],
            f,
        )
    with open(os.path.join(max_pooling, "1_Pooling", "config.json"), "w") as f:
        json.dump({"word_embedding_dimension": 32, "pooling_mode_max_tokens": True}, f)
    with pytest.raises(UserError, match="pooling"):
        bert_import.load_bert_folder(max_pooling)
