"""SentencePiece vocabularies, including ones rebuilt from a GGUF file.

A GGUF file of a SentencePiece model (`tokenizer.ggml.model == 'llama'`, as
for every Gemma) keeps the pieces, their scores and their types, but not the
`.model` file. `model_proto_from_gguf` rebuilds an equivalent BPE
`ModelProto`: byte fallback for characters outside the vocabulary, no dummy
prefix, whitespace kept verbatim (escaped to U+2581) and not used as a word
boundary, so runs of spaces and newlines become the vocabulary's dedicated
pieces. User-defined pieces ('\\n', runs of spaces, HTML tags ...) are matched
in the text before BPE runs, which is what the reference (transformers'
tokenizer read from the same GGUF) does with them.

The one known difference from the reference: control tokens written literally
in the text (say '<eos>') are split as ordinary text here, as SentencePiece
always does, while transformers turns them into their ids.

The rebuilt model is written once to a cache folder named by its content hash,
because `seqio.SentencePieceVocabulary` (and its TF ops) read a model file.
"""

import hashlib
import os

import numpy as np
import seqio
from sentencepiece import sentencepiece_model_pb2 as spm_pb2

from gecko_jax.errors import UserError
from gecko_jax.gguf_file import GgufFile

_CACHE_ENV = "GECKO_JAX_CACHE"
_SPACE = "\u2581"
# GGUF token types; SentencePiece's ModelProto.SentencePiece.Type uses the
# same numbers (1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused,
# 6 byte).
_TYPES = frozenset(range(1, 7))
_USER_DEFINED = 4


def cache_dir() -> str:
    """Folder for derived files ($GECKO_JAX_CACHE, else ~/.cache/gecko_jax)."""
    base = os.environ.get(_CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "gecko_jax")
    os.makedirs(base, exist_ok=True)
    return base


def model_proto_from_gguf(metadata: dict, path: str = "GGUF") -> spm_pb2.ModelProto:
    """Rebuilds a SentencePiece BPE model from GGUF tokenizer metadata.

    Args:
      metadata: the GGUF key/value metadata (`GgufFile.metadata`).
      path: the file, for error messages.

    Returns:
      The `ModelProto`.

    Raises:
      UserError: the GGUF holds no SentencePiece tokenizer.
    """
    kind = metadata.get("tokenizer.ggml.model")
    if kind != "llama":
        raise UserError(
            f"{path}: tokenizer model {kind!r} is not SentencePiece "
            "('llama'); only SentencePiece GGUF vocabularies are "
            "supported."
        )
    pieces = metadata["tokenizer.ggml.tokens"]
    scores = np.asarray(metadata["tokenizer.ggml.scores"], np.float32)
    types = np.asarray(metadata["tokenizer.ggml.token_type"], np.int64)
    if not len(pieces) == len(scores) == len(types) or not set(np.unique(types)) <= _TYPES:
        raise UserError(f"{path}: tokenizer pieces, scores and types disagree; the file is damaged.")
    proto = spm_pb2.ModelProto()
    trainer = proto.trainer_spec
    trainer.model_type = spm_pb2.TrainerSpec.BPE
    trainer.vocab_size = len(pieces)
    trainer.byte_fallback = True
    trainer.split_by_whitespace = False
    trainer.allow_whitespace_only_pieces = True
    trainer.split_digits = False
    trainer.split_by_unicode_script = False
    trainer.split_by_number = False
    trainer.unk_id = int(metadata.get("tokenizer.ggml.unknown_token_id", 3))
    trainer.bos_id = int(metadata.get("tokenizer.ggml.bos_token_id", 2))
    trainer.eos_id = int(metadata.get("tokenizer.ggml.eos_token_id", 1))
    trainer.pad_id = int(metadata.get("tokenizer.ggml.padding_token_id", 0))
    trainer.unk_piece = pieces[trainer.unk_id]
    trainer.bos_piece = pieces[trainer.bos_id]
    trainer.eos_piece = pieces[trainer.eos_id]
    trainer.pad_piece = pieces[trainer.pad_id]
    normalizer = proto.normalizer_spec
    normalizer.name = "identity"
    normalizer.add_dummy_prefix = bool(metadata.get("tokenizer.ggml.add_space_prefix", False))
    normalizer.remove_extra_whitespaces = False
    normalizer.escape_whitespaces = True
    for piece, score, kind in zip(pieces, scores.tolist(), types.tolist()):
        if kind == _USER_DEFINED:
            # GGUF writes user-defined pieces with raw spaces, but they are
            # matched against the escaped text.
            piece = piece.replace(" ", _SPACE)
        proto.pieces.add(piece=piece, score=score, type=kind)
    # llama.cpp marks <unk> as a control token; SentencePiece insists on the
    # unknown type for it.
    proto.pieces[trainer.unk_id].type = spm_pb2.ModelProto.SentencePiece.UNKNOWN
    return proto


def write_model(proto: spm_pb2.ModelProto) -> str:
    """Writes `proto` into the cache (once per content) and returns the path."""
    data = proto.SerializeToString()
    digest = hashlib.sha256(data).hexdigest()[:16]
    path = os.path.join(cache_dir(), f"spm-{digest}.model")
    if not os.path.exists(path):
        # Write then rename, so a concurrent reader never sees half a file.
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    return path


def gguf_model_file(gguf_path: str) -> str:
    """The cached SentencePiece model file rebuilt from a GGUF file."""
    return write_model(model_proto_from_gguf(GgufFile(gguf_path).metadata, gguf_path))


def sentencepiece_vocabulary(model_file: str) -> seqio.SentencePieceVocabulary:
    """A seqio vocabulary over a SentencePiece `.model` file.

    Raises:
      UserError: the file does not exist.
    """
    if not os.path.isfile(model_file):
        raise UserError(f"SentencePiece model {model_file} not found.")
    return seqio.SentencePieceVocabulary(model_file)


def gguf_vocabulary(gguf_path: str) -> seqio.SentencePieceVocabulary:
    """A seqio vocabulary that tokenizes like the tokenizer of a GGUF file."""
    return sentencepiece_vocabulary(gguf_model_file(gguf_path))
