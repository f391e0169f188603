"""Tokenizer files that make transformers tokenize exactly as our vocabularies.

- WordPiece (uncased BERT): the vocabulary file is copied (`vocab.txt`, or the
  `tokenizer.json` transformers >= 5 saves) with a `BertTokenizer` config.
- SentencePiece (Gemma): the model is written as `tokenizer.model` with a
  `GemmaTokenizer` config; transformers converts it into its own BPE when it
  loads the folder (about 11 s for Gemma 3's 262k pieces). That conversion
  assumes Gemma's conventions (BPE, byte fallback, no dummy prefix), which
  every GGUF-derived model here has; other SentencePiece models are refused.

Both configs add bos and eos around every text and pad on the right, as our
packing does, and return no token type ids (our towers use none).
"""

import json
import os
import shutil
from typing import Any

import seqio
from sentencepiece import sentencepiece_model_pb2 as spm_pb2

from gecko_jax.data.wordpiece import WordPieceVocabulary
from gecko_jax.errors import UserError

_COMMON = {
    "padding_side": "right",
    "truncation_side": "right",
    "model_input_names": ["input_ids", "attention_mask"],
}


def _write_json(path: str, value: Any) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=2, ensure_ascii=False)
        f.write("\n")


def _write_wordpiece(vocab: WordPieceVocabulary, folder: str, max_length: int) -> None:
    name = "tokenizer.json" if vocab.vocab_path.endswith(".json") else "vocab.txt"
    shutil.copyfile(vocab.vocab_path, os.path.join(folder, name))
    special = {
        "unk_token": "[UNK]",
        "sep_token": "[SEP]",
        "pad_token": "[PAD]",
        "cls_token": "[CLS]",
        "mask_token": "[MASK]",
    }
    _write_json(
        os.path.join(folder, "tokenizer_config.json"),
        {
            "tokenizer_class": "BertTokenizer",
            "do_lower_case": True,
            "do_basic_tokenize": True,
            "tokenize_chinese_chars": True,
            "strip_accents": None,
            "model_max_length": max_length,
            **special,
            **_COMMON,
        },
    )
    _write_json(os.path.join(folder, "special_tokens_map.json"), special)


def _check_gemma_style(proto: spm_pb2.ModelProto, path: str) -> None:
    if (
        proto.trainer_spec.model_type != spm_pb2.TrainerSpec.BPE
        or not proto.trainer_spec.byte_fallback
        or proto.normalizer_spec.add_dummy_prefix
    ):
        raise UserError(
            f"SentencePiece model {path} is not Gemma-style (BPE, "
            "byte fallback, no dummy prefix); transformers' "
            "GemmaTokenizer would not tokenize like it, so it "
            "cannot be exported."
        )


def _write_sentencepiece(vocab: seqio.SentencePieceVocabulary, folder: str, max_length: int) -> None:
    proto = spm_pb2.ModelProto.FromString(vocab.sp_model)
    _check_gemma_style(proto, vocab.sentencepiece_model_file)
    with open(os.path.join(folder, "tokenizer.model"), "wb") as f:
        f.write(vocab.sp_model)
    piece = vocab.tokenizer.id_to_piece
    special = {
        "bos_token": piece(vocab.bos_id),
        "eos_token": piece(vocab.eos_id),
        "pad_token": piece(vocab.pad_id),
        "unk_token": piece(vocab.unk_id),
    }
    _write_json(
        os.path.join(folder, "tokenizer_config.json"),
        {
            "tokenizer_class": "GemmaTokenizer",
            "add_bos_token": True,
            "add_eos_token": True,
            "mask_token": None,
            "model_max_length": max_length,
            **special,
            **_COMMON,
        },
    )
    _write_json(os.path.join(folder, "special_tokens_map.json"), special)


def write_tokenizer(vocab: seqio.Vocabulary, folder: str, max_length: int) -> None:
    """Writes the tokenizer files of `vocab` into `folder`.

    Args:
      vocab: a `WordPieceVocabulary` or a `seqio.SentencePieceVocabulary`.
      folder: the backbone folder (beside config.json).
      max_length: tokens per text, bos and eos included.

    Raises:
      UserError: a vocabulary kind transformers cannot reproduce.
    """
    if isinstance(vocab, WordPieceVocabulary):
        _write_wordpiece(vocab, folder, max_length)
    elif isinstance(vocab, seqio.SentencePieceVocabulary):
        _write_sentencepiece(vocab, folder, max_length)
    else:
        raise UserError(
            f"Vocabulary {type(vocab).__name__} cannot be exported; "
            "only WordPiece and SentencePiece vocabularies can."
        )


def special_ids(vocab: seqio.Vocabulary) -> dict[str, int]:
    """'pad', 'bos' and 'eos' ids of `vocab`, for the model config."""
    return {"pad": vocab.pad_id, "bos": vocab.bos_id, "eos": vocab.eos_id}
