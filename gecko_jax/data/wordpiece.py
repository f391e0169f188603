"""A SeqIO vocabulary that tokenizes like the HF (uncased) `BertTokenizer`.

The reference is the `tokenizers` pipeline behind `transformers.BertTokenizer`
for uncased BERT vocabularies (what sentence-transformers runs for
all-MiniLM-L6-v2):

1. Special-token literals in the raw text (`[SEP]`, `[MASK]`, ...) become their
   ids; the text between them goes through steps 2-5.
2. Clean: drop U+FFFD and characters of category Cc, Cf, Co, Cs except tab,
   newline and carriage return (unassigned code points are kept).
3. Strip accents (NFD, then drop category Mn) and lowercase character by
   character (so a final capital sigma becomes `σ`, not `ς`).
4. Split on whitespace; isolate punctuation (ASCII symbols or category P*) and
   CJK ideographs as words of their own.
5. Greedy longest-match-first WordPiece with the `##` continuation prefix; a
   word longer than 100 characters, or one that cannot be covered by the
   vocabulary, becomes a single `[UNK]`.

The same steps are written twice, in Python for `encode` and with TF ops for
`encode_tf` (used inside tf.data), and the tests hold both to the HF output.
`encode` returns bare word-piece ids: models add `[CLS]` (bos) and `[SEP]`
(eos) when packing.
"""

import functools
import json
import re
import unicodedata
from typing import Sequence

import seqio
import tensorflow as tf
import tensorflow_text as tf_text

from gecko_jax.errors import UserError

_SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
_SUFFIX = "##"
_MAX_CHARS_PER_WORD = 100

# The CJK ranges of the `tokenizers` BERT normalizer. They differ from the old
# Python BasicTokenizer in one place (0x2B920, not 0x2B820); we follow the
# library that sentence-transformers actually runs.
_CJK_RANGES = (
    (0x4E00, 0x9FFF),
    (0x3400, 0x4DBF),
    (0x20000, 0x2A6DF),
    (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F),
    (0x2B920, 0x2CEAF),
    (0xF900, 0xFAFF),
    (0x2F800, 0x2FA1F),
)
_ASCII_PUNCT_RANGES = ((33, 47), (58, 64), (91, 96), (123, 126))
_DROPPED_CATEGORIES = frozenset(("Cc", "Cf", "Co", "Cs"))
# Whitespace that survives cleaning: tab/newline/CR, Zs, line/paragraph sep.
_EXTRA_WHITESPACE = frozenset("\t\n\r\u2028\u2029")

# RE2 versions of the character classes above, for the TF path.
_RE2_DROPPED = r"[^\P{C}\t\n\r]|\x{FFFD}"
_RE2_WHITESPACE = r"[\t\n\r\p{Zs}\x{2028}\x{2029}]"
_RE2_PUNCT_OR_CJK = (
    r"[\p{P}"
    + "".join(rf"\x{{{lo:X}}}-\x{{{hi:X}}}" for lo, hi in _ASCII_PUNCT_RANGES)
    + "".join(rf"\x{{{lo:X}}}-\x{{{hi:X}}}" for lo, hi in _CJK_RANGES)
    + "]"
)


def _in_ranges(cp: int, ranges) -> bool:
    return any(lo <= cp <= hi for lo, hi in ranges)


@functools.lru_cache(maxsize=4096)
def _char_kind(ch: str) -> str:
    """Classifies one character: 'drop', 'space', 'isolate' or 'keep'."""
    cat = unicodedata.category(ch)
    cp = ord(ch)
    if ch in _EXTRA_WHITESPACE or cat == "Zs":
        return "space"
    if cat in _DROPPED_CATEGORIES or cp == 0xFFFD:
        return "drop"
    if cat.startswith("P") or _in_ranges(cp, _ASCII_PUNCT_RANGES) or _in_ranges(cp, _CJK_RANGES):
        return "isolate"
    return "keep"


def _basic_split(text: str) -> list[str]:
    """Steps 2-4 of the module docstring for text without special tokens."""
    text = "".join(ch for ch in text if _char_kind(ch) != "drop")
    text = unicodedata.normalize("NFD", text)
    text = "".join(ch for ch in text if unicodedata.category(ch) != "Mn")
    # str.lower() applies the final-sigma rule; the reference does not.
    text = text.replace("\u03a3", "\u03c3").lower()
    words = []
    current = []
    for ch in text:
        kind = _char_kind(ch)
        if kind == "keep":
            current.append(ch)
            continue
        if current:
            words.append("".join(current))
            current = []
        if kind == "isolate":
            words.append(ch)
    if current:
        words.append("".join(current))
    return words


def _read_vocab(path: str) -> list[str]:
    """Tokens by id from a `vocab.txt` or an HF `tokenizer.json`."""
    try:
        with tf.io.gfile.GFile(path, "r") as f:
            text = f.read()
    except tf.errors.NotFoundError as e:
        raise UserError(
            f"WordPiece vocabulary {path!r} not found; pass a BERT vocab.txt or tokenizer.json."
        ) from e
    if not path.endswith(".json"):
        tokens = text.split("\n")
        # A final newline ends the last line; it does not start a new token.
        return tokens[:-1] if tokens and not tokens[-1] else tokens
    try:
        spec = json.loads(text)
        model, normalizer = spec["model"], spec.get("normalizer") or {}
    except (ValueError, KeyError, TypeError) as e:
        raise UserError(f"{path} is not an HF tokenizer.json ({e}).") from e
    if (
        model.get("type") != "WordPiece"
        or model.get("continuing_subword_prefix", _SUFFIX) != _SUFFIX
        or normalizer.get("type") != "BertNormalizer"
        or not normalizer.get("lowercase", True)
    ):
        raise UserError(f"{path} is not an uncased BERT WordPiece tokenizer; only those are supported.")
    vocab = model["vocab"]
    # A vocab.txt with a repeated token leaves its earlier id unused; an empty
    # string holds the place and can never match a word piece.
    tokens = [""] * (max(vocab.values(), default=-1) + 1)
    for token, token_id in vocab.items():
        tokens[token_id] = token
    return tokens


class WordPieceVocabulary(seqio.Vocabulary):
    """Uncased BERT WordPiece vocabulary.

    Attributes:
      vocab_path: the `vocab.txt` or `tokenizer.json` it was read from.
    """

    def __init__(self, vocab_path: str):
        """Reads the vocabulary.

        Args:
          vocab_path: path of a BERT `vocab.txt` (one token a line) or of an
            HF `tokenizer.json` with a WordPiece model and an uncased
            BertNormalizer; the vocabulary must contain `[PAD]`, `[UNK]`,
            `[CLS]` and `[SEP]`.

        Raises:
          UserError: the file is missing, of another kind, or lacks a required
            special token.
        """
        super().__init__(extra_ids=0)
        self.vocab_path = vocab_path
        self._id_to_token = _read_vocab(vocab_path)
        if not self._id_to_token:
            raise UserError(f"WordPiece vocabulary {vocab_path!r} is empty.")
        # Later duplicates win, as in HF's `load_vocab`.
        self._token_to_id = {t: i for i, t in enumerate(self._id_to_token)}
        for token in _SPECIAL_TOKENS[:4]:
            if token not in self._token_to_id:
                raise UserError(
                    f"WordPiece vocabulary {vocab_path!r} has no {token} token; is it a BERT vocab.txt?"
                )
        self._special = [t for t in _SPECIAL_TOKENS if t in self._token_to_id]
        self._special_re = re.compile("(" + "|".join(re.escape(t) for t in self._special) + ")")
        self._wordpiece_cached = functools.lru_cache(maxsize=1 << 16)(self._wordpiece)
        self._tf_state = None

    @property
    def pad_id(self) -> int:
        return self._token_to_id["[PAD]"]

    @property
    def unk_id(self) -> int:
        return self._token_to_id["[UNK]"]

    @property
    def bos_id(self) -> int:
        return self._token_to_id["[CLS]"]

    @property
    def eos_id(self) -> int:
        return self._token_to_id["[SEP]"]

    @property
    def _base_vocab_size(self) -> int:
        return len(self._id_to_token)

    # -- Python path ---------------------------------------------------------

    def _wordpiece(self, word: str) -> tuple[int, ...]:
        if len(word) > _MAX_CHARS_PER_WORD:
            return (self.unk_id,)
        ids = []
        start = 0
        while start < len(word):
            end = len(word)
            while end > start:
                piece = word[start:end] if start == 0 else _SUFFIX + word[start:end]
                token_id = self._token_to_id.get(piece)
                if token_id is not None:
                    break
                end -= 1
            else:
                return (self.unk_id,)
            ids.append(token_id)
            start = end
        return tuple(ids)

    def _encode(self, s: str) -> Sequence[int]:
        ids = []
        for i, chunk in enumerate(self._special_re.split(s)):
            # re.split with one group puts the matched separators at odd indices.
            if i % 2:
                ids.append(self._token_to_id[chunk])
                continue
            for word in _basic_split(chunk):
                ids.extend(self._wordpiece_cached(word))
        return ids

    def _decode(self, ids: Sequence[int]) -> str:
        skip = (self.pad_id, self.bos_id, self.eos_id)
        text = " ".join(self._id_to_token[i] for i in ids if i not in skip)
        return text.replace(" " + _SUFFIX, "")

    # -- TF path -------------------------------------------------------------

    def _tf_objects(self):
        """Builds (once) the word-piece op and token list."""
        if self._tf_state is None:
            # FastWordpieceTokenizer gives the same pieces as WordpieceTokenizer
            # over a lookup table at a tenth of the cost. It needs unique
            # tokens, so an id that no piece maps to (a repeated token's
            # earlier id, a placeholder) gets a token with a space, which no
            # word (split on whitespace) can match.
            unique = [
                token if self._token_to_id.get(token) == i else f" unused {i}"
                for i, token in enumerate(self._id_to_token)
            ]
            # Outside any tf.function/dataset graph so that the model is an
            # eager resource every later graph can capture.
            with tf.init_scope():
                wordpiece = tf_text.FastWordpieceTokenizer(
                    vocab=unique,
                    suffix_indicator=_SUFFIX,
                    # Words over the character limit are replaced by [UNK]
                    # beforehand; 4 bytes per character never cuts one short.
                    max_bytes_per_word=4 * _MAX_CHARS_PER_WORD,
                    token_out_type=tf.int32,
                    unknown_token="[UNK]",
                    no_pretokenization=True,
                    support_detokenization=False,
                )
                tokens = tf.constant(self._id_to_token)
            self._tf_state = (wordpiece, tokens)
        return self._tf_state

    def tokenize_tf(self, texts: tf.Tensor) -> tf.RaggedTensor:
        """Tokenizes a 1-D string tensor to a [batch, None] int32 RaggedTensor."""
        wordpiece, _ = self._tf_objects()
        special = "|".join(re.escape(t) for t in self._special)
        pieces = tf_text.regex_split(texts, special, special)  # [B, P]
        flat = pieces.flat_values
        is_special = tf.strings.regex_full_match(flat, special)

        text = tf.strings.regex_replace(flat, _RE2_DROPPED, "")
        text = tf_text.normalize_utf8(text, "NFD")
        text = tf.strings.regex_replace(text, r"\p{Mn}", "")
        text = tf.strings.regex_replace(text, "\u03a3", "\u03c3")
        text = tf.strings.lower(text, encoding="utf-8")
        words = tf_text.regex_split(text, f"{_RE2_WHITESPACE}|{_RE2_PUNCT_OR_CJK}", _RE2_PUNCT_OR_CJK)

        # A special piece is one word, itself, instead of what the basic split
        # made of it ("[", "sep", "]").
        keep = tf.RaggedTensor.from_row_splits(
            tf.repeat(tf.logical_not(is_special), words.row_lengths()), words.row_splits
        )
        words = tf.concat(
            [
                tf.ragged.boolean_mask(flat[:, None], is_special[:, None]),
                tf.ragged.boolean_mask(words, keep),
            ],
            axis=1,
        )  # [pieces, words]

        too_long = tf.strings.length(words.flat_values, unit="UTF8_CHAR") > _MAX_CHARS_PER_WORD
        words = words.with_flat_values(tf.where(too_long, "[UNK]", words.flat_values))
        ids = wordpiece.tokenize(words)  # [pieces, words, word-pieces]
        return pieces.with_flat_values(ids).merge_dims(1, 3)

    def _encode_tf(self, s: tf.Tensor) -> tf.Tensor | tf.RaggedTensor:
        # A batch of texts in one call is much faster than one text a call.
        if s.shape.rank == 1:
            return self.tokenize_tf(s)
        return self.tokenize_tf(tf.reshape(s, [1]))[0]

    def _decode_tf(self, ids: tf.Tensor) -> tf.Tensor:
        _, tokens = self._tf_objects()
        keep = tf.reduce_all(tf.not_equal(ids[..., None], [self.pad_id, self.bos_id, self.eos_id]), axis=-1)
        pieces = tf.ragged.boolean_mask(tf.gather(tokens, ids), keep)
        text = tf.strings.reduce_join(pieces, axis=-1, separator=" ")
        return tf.strings.regex_replace(text, " " + re.escape(_SUFFIX), "")

    @property
    def tokens(self) -> list[str]:
        """The pieces, by id."""
        return list(self._id_to_token)

    def __reduce__(self):
        # Rebuilt from the file: the caches and TF resources do not pickle.
        return (WordPieceVocabulary, (self.vocab_path,))

    def __eq__(self, other) -> bool:
        return isinstance(other, WordPieceVocabulary) and self._id_to_token == other._id_to_token

    def __hash__(self) -> int:
        return hash((len(self._id_to_token), tuple(self._id_to_token[:64])))

    def __str__(self) -> str:
        return f"WordPieceVocabulary(vocab_path={self.vocab_path!r}, vocab_size={self.vocab_size})"
