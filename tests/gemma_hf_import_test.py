"""HF safetensors import of Gemma 1/2/3 and EmbeddingGemma vs transformers.

Each reference is a tiny randomly initialised transformers model saved to a
temporary folder; our import of that folder must compute the same thing.
"""

import json
import os

import jax
import numpy as np
import pytest

from gecko_jax.data import sentencepiece_vocab
from gecko_jax.encoder import Encoder
from gecko_jax.errors import UserError
from gecko_jax.models import gemma_import
from gecko_jax.models.gemma import Gemma
from sentencepiece_vocab_test import tiny_metadata  # pylint: disable=g-bad-import-order

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

COMMON = dict(
    vocab_size=279,
    hidden_size=32,
    intermediate_size=48,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=8,
    pad_token_id=0,
    bos_token_id=2,
    eos_token_id=1,
)
MODELS = {
    "gemma": (transformers.GemmaConfig, transformers.GemmaForCausalLM, {}),
    "gemma2": (
        transformers.Gemma2Config,
        transformers.Gemma2ForCausalLM,
        dict(
            sliding_window=3,
            query_pre_attn_scalar=12,
            attn_logit_softcapping=5.0,
            final_logit_softcapping=3.0,
        ),
    ),
    "gemma3": (
        transformers.Gemma3TextConfig,
        transformers.Gemma3ForCausalLM,
        dict(
            sliding_window=3,
            rope_parameters={
                "full_attention": {"rope_type": "linear", "rope_theta": 1e6, "factor": 8.0},
                "sliding_attention": {"rope_type": "default", "rope_theta": 1e4},
            },
            layer_types=["sliding_attention"] * 2 + ["full_attention"] + ["sliding_attention"],
        ),
    ),
}


def save_with_tokenizer(model, folder):
    model.save_pretrained(folder, safe_serialization=True)
    proto = sentencepiece_vocab.model_proto_from_gguf(tiny_metadata())
    with open(os.path.join(folder, "tokenizer.model"), "wb") as f:
        f.write(proto.SerializeToString())


def randomize_norms(model):
    # Norm weights start at zero; random ones check the (1 + w) convention.
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name:
                param.normal_(0.0, 0.5)


IDS = np.random.RandomState(0).randint(4, 279, size=(2, 10)).astype(np.int64)
MASK = np.ones_like(IDS)
MASK[1, 7:] = 0


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_causal_lm_logits_match(kind, tmp_path):
    config_cls, model_cls, extra = MODELS[kind]
    torch.manual_seed(0)
    reference = model_cls(config_cls(**COMMON, **extra)).eval()
    randomize_norms(reference)
    save_with_tokenizer(reference, str(tmp_path))
    with torch.no_grad():
        expected = reference(torch.tensor(IDS), attention_mask=torch.tensor(MASK)).logits.numpy()
    checkpoint = gemma_import.load_checkpoint(f"hf:{tmp_path}")
    model = Gemma(checkpoint.config)
    logits = jax.jit(
        lambda p, ids, mask: model.apply(
            {"params": p}, model.apply({"params": p}, ids, mask), method=Gemma.logits
        )
    )(checkpoint.params, IDS.astype(np.int32), MASK)
    real = MASK.astype(bool)
    np.testing.assert_allclose(np.asarray(logits)[real], expected[real], atol=2e-4)


def test_embeddinggemma_folder_matches(tmp_path):
    config = transformers.Gemma3TextConfig(
        **COMMON, **{**MODELS["gemma3"][2], "use_bidirectional_attention": True}
    )
    torch.manual_seed(1)
    backbone = transformers.Gemma3TextModel(config).eval()
    randomize_norms(backbone)
    save_with_tokenizer(backbone, str(tmp_path))
    dense = [torch.nn.Linear(32, 64, bias=False), torch.nn.Linear(64, 16, bias=False)]
    modules = [
        ("Transformer", ""),
        ("Pooling", "1_Pooling"),
        ("Dense", "2_Dense"),
        ("Dense", "3_Dense"),
        ("Normalize", "4_Normalize"),
    ]
    for kind, sub in modules[1:]:
        os.makedirs(tmp_path / sub)
    (tmp_path / "modules.json").write_text(
        json.dumps(
            [
                {"idx": i, "name": str(i), "path": sub, "type": f"sentence_transformers.models.{kind}"}
                for i, (kind, sub) in enumerate(modules)
            ]
        )
    )
    (tmp_path / "1_Pooling" / "config.json").write_text(
        json.dumps({"word_embedding_dimension": 32, "pooling_mode": "mean"})
    )
    for layer, sub in zip(dense, ("2_Dense", "3_Dense")):
        (tmp_path / sub / "config.json").write_text(
            json.dumps(
                {
                    "in_features": layer.in_features,
                    "out_features": layer.out_features,
                    "bias": False,
                    "activation_function": "torch.nn.modules.linear.Identity",
                }
            )
        )
        from safetensors.torch import save_file  # pylint: disable=g-import-not-at-top

        save_file(
            {"linear.weight": layer.weight.detach().contiguous()}, str(tmp_path / sub / "model.safetensors")
        )

    encoder = Encoder.load(f"hf:{tmp_path}")
    texts = ["the cat sat", "a cat at the cat the cat"]
    ours = encoder.encode(texts)
    vocab = encoder.vocabulary
    rows = [[vocab.bos_id, *vocab.encode(t), vocab.eos_id] for t in texts]
    expected = []
    with torch.no_grad():
        for row in rows:
            hidden = backbone(input_ids=torch.tensor([row])).last_hidden_state[0]
            x = dense[1](dense[0](hidden.mean(0)))
            expected.append(torch.nn.functional.normalize(x, dim=0).numpy())
    assert ours.shape == (2, 16)
    np.testing.assert_allclose(ours, np.stack(expected), atol=1e-5)


def test_bad_folders(tmp_path):
    with pytest.raises(UserError, match="not a directory"):
        gemma_import.load_checkpoint(f"hf:{tmp_path / 'missing'}")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(UserError, match="not a Gemma"):
        gemma_import.load_checkpoint(f"hf:{tmp_path}")
