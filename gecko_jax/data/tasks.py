"""The SeqIO path: example lists -> registered Tasks -> fixed-length token ids.

A Task's source yields the raw example fields as strings; its preprocessors
apply an input format (`formats.py`, re-implemented here with TF string ops so
it runs inside tf.data) and tokenize `query`, `positive` and `negative` with
bare word ids (no special tokens), a batch of examples at a time
(`format_and_tokenize`). `DualEncoderFeatureConverter` then adds the
special tokens and pads to fixed length with the rule of `packing.pack`:

    ids  = [bos] + tokens[:L - 2] + [eos] + [pad] * (rest)
    mask = 1 on [bos .. eos], 0 on padding

An example without a negative (empty `negative` text, hence no tokens) gets
all-pad `negative_ids`, an all-zero `negative_mask` and `has_negative` = 0.
"""

import itertools
import re
from typing import Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
import seqio
import tensorflow as tf

from gecko_jax.data import batch_spec
from gecko_jax.data import formats
from gecko_jax.data import jsonl
from gecko_jax.data import wordpiece

TEXT_FEATURES = batch_spec.TEXT_FIELDS
MODEL_FEATURES = tuple(f"{k}_{part}" for k in TEXT_FEATURES for part in ("ids", "mask")) + ("has_negative",)

# Raw string columns the source yields; missing optional fields are "".
_STRING_COLUMNS = ("query", "positive", "negative", "task", "title", "negative_title")
_COLUMN_SPECS = {
    **{key: tf.TensorSpec([None], tf.string) for key in _STRING_COLUMNS},
    "symmetric": tf.TensorSpec([None], tf.bool),
}

# Texts are cut to this many characters per token of their length limit before
# tokenizing, so that one huge example (a 10 MB page) costs no more memory than
# a long one. No vocabulary here has pieces anywhere near this long (WordPiece
# maps a word of more than 100 characters to one [UNK]), so the tokens that are
# kept are those of the whole text unless its first tokens average more than
# 128 characters each.
CHARS_PER_TOKEN_LIMIT = 128


def examples_to_columns(examples: Sequence[jsonl.Example]) -> dict[str, np.ndarray]:
    """Turns example dicts into the source's columns.

    Args:
        examples: validated example dicts.

    Returns:
        One array per column of `_STRING_COLUMNS` (object arrays of str, ""
        for a missing field) plus `symmetric` (bool), ready for
        `tf.data.Dataset.from_tensor_slices`.
    """
    columns = {key: np.array([ex.get(key, "") for ex in examples], dtype=object) for key in _STRING_COLUMNS}
    columns["symmetric"] = np.array([formats.is_symmetric(ex) for ex in examples], dtype=bool)
    return columns


def chunked(items: Iterable, size: int) -> Iterator[list]:
    """Consecutive lists of `size` items (the last may be shorter)."""
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def examples_dataset(
    load_examples: Callable[[], Iterable[jsonl.Example]], chunk_size: int = 1024
) -> tf.data.Dataset:
    """The raw columns of a stream of examples, one example per element.

    The examples are read and converted a chunk at a time, so a source of any
    size streams through in constant memory.

    Args:
        load_examples: returns the examples (a list, or a stream read as
            the dataset is).
        chunk_size: examples per conversion to columns (speed only).

    Returns:
        A dataset of `examples_to_columns` rows, in the examples' order.
    """
    examples = load_examples()  # Here, so that a list's reading errors are raised before tf.data runs.

    def chunks():
        for chunk in chunked(examples, chunk_size):
            yield examples_to_columns(chunk)

    return tf.data.Dataset.from_generator(chunks, output_signature=_COLUMN_SPECS).unbatch()


def _or_none(value: tf.Tensor) -> tf.Tensor:
    return tf.where(tf.equal(value, ""), formats.NONE_VALUE, value)


def _tf_gecko_query(task: tf.Tensor, text: tf.Tensor) -> tf.Tensor:
    """TF twin of `formats.gecko_query`."""
    return tf.strings.join(["task: ", _or_none(task), " | query: ", text])


def _tf_gecko_document(text: tf.Tensor, title: tf.Tensor) -> tf.Tensor:
    """TF twin of `formats.gecko_document`."""
    return tf.strings.join(["title: ", _or_none(title), " | text: ", text])


def format_fn(fmt: str) -> Callable[[Mapping[str, tf.Tensor]], dict[str, tf.Tensor]]:
    """Returns `formats.format_example` in TF string ops, for one example or a batch.

    Args:
        fmt: one of `formats.FORMATS`.

    Returns:
        A function mapping the raw columns (scalars, or vectors of a batch)
        to formatted `query`, `positive` and `negative` strings ("" = no
        negative).
    """
    formats.check_format(fmt)

    def format_texts(ex: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        if fmt == "plain":
            return {k: ex[k] for k in TEXT_FEATURES}

        def target(text, title):
            return tf.where(
                ex["symmetric"], _tf_gecko_query(ex["task"], text), _tf_gecko_document(text, title)
            )

        return {
            "query": _tf_gecko_query(ex["task"], ex["query"]),
            "positive": target(ex["positive"], ex["title"]),
            "negative": tf.where(
                tf.equal(ex["negative"], ""), "", target(ex["negative"], ex["negative_title"])
            ),
        }

    return format_texts


def output_features(vocabulary: seqio.Vocabulary) -> dict[str, seqio.Feature]:
    """The Task's output features: bare token ids, special tokens added later."""
    return {k: seqio.Feature(vocabulary, add_eos=False, dtype=tf.int32) for k in TEXT_FEATURES}


# Vocabularies whose `encode_tf` also takes a 1-D batch of texts.
_BATCHED_VOCABULARIES = (wordpiece.WordPieceVocabulary, seqio.SentencePieceVocabulary)


def _encode_batch(vocabulary: seqio.Vocabulary, texts: tf.Tensor) -> tf.RaggedTensor:
    """Token ids of each text of a 1-D batch, [n, None]."""
    if isinstance(vocabulary, _BATCHED_VOCABULARIES):
        return vocabulary.encode_tf(texts)
    # `Vocabulary.encode_tf` is defined on one text only.
    return tf.map_fn(
        lambda text: tf.cast(vocabulary.encode_tf(text), tf.int32),
        texts,
        fn_output_signature=tf.RaggedTensorSpec([None], tf.int32),
    )


def format_and_tokenize(fmt: str, batch_size: int = 1024) -> Callable[..., tf.data.Dataset]:
    """Returns a SeqIO preprocessor: `format_fn(fmt)`, then tokenization.

    The tokens are those of `seqio.preprocessors.tokenize` (without the
    `_pretokenized` copies), but the work runs on batches: per example,
    tf.data and the tokenizer's ragged ops cost about a millisecond, and each
    tokenized feature traces a tokenizer graph (seconds). One tokenizer call
    on the query, positive and negative texts of `batch_size` examples
    together traces one graph and spreads the per-call cost.

    Args:
        fmt: one of `formats.FORMATS`.
        batch_size: examples per tokenizer call (speed only).

    Returns:
        A preprocessor taking the raw columns, `output_features` (one
        vocabulary for all features) and the `sequence_length` of each text
        (texts are cut to `CHARS_PER_TOKEN_LIMIT` characters per token of
        it first), and giving int32 [n] bare token ids for `query`,
        `positive` and `negative`.
    """
    format_texts = format_fn(fmt)

    def preprocess(
        dataset: tf.data.Dataset,
        output_features: Mapping[str, seqio.Feature],
        sequence_length: Mapping[str, int] | None = None,
    ) -> tf.data.Dataset:
        vocabulary = output_features[TEXT_FEATURES[0]].vocabulary

        def cut(text: tf.Tensor, key: str) -> tf.Tensor:
            if not sequence_length:
                return text
            return tf.strings.substr(text, 0, sequence_length[key] * CHARS_PER_TOKEN_LIMIT, unit="UTF8_CHAR")

        def run(batch):
            texts = format_texts(batch)
            count = tf.shape(texts[TEXT_FEATURES[0]])[0]
            ids = _encode_batch(vocabulary, tf.concat([cut(texts[k], k) for k in TEXT_FEATURES], axis=0))
            return {
                key: tf.cast(ids[i * count : (i + 1) * count], tf.int32)
                for i, key in enumerate(TEXT_FEATURES)
            }

        return dataset.batch(batch_size).map(run, num_parallel_calls=tf.data.AUTOTUNE).unbatch()

    return preprocess


def task_name(name: str) -> str:
    """A SeqIO-valid task name under the `gecko_jax.` prefix."""
    return "gecko_jax." + re.sub(r"[^\w.:]", "_", name)


def register_task(
    name: str, load_examples: Callable[[], Sequence[jsonl.Example]], vocabulary: seqio.Vocabulary, fmt: str
) -> seqio.Task:
    """Registers (or re-registers) a SeqIO Task over a list of examples.

    Re-registering replaces the old definition, so a process can build the
    same source again with another vocabulary or format.

    Args:
        name: the task name; see `task_name`.
        load_examples: returns the examples (a list or a stream); called
            each time the dataset is read, as SeqIO sources read lazily.
        vocabulary: tokenizes the formatted texts.
        fmt: one of `formats.FORMATS`.

    Returns:
        The registered Task, with the single split "train".
    """
    formats.check_format(fmt)

    def dataset_fn(split: str, shuffle_files: bool, seed: int | None = None) -> tf.data.Dataset:
        del split, shuffle_files, seed  # One split; order is the pipeline's business.
        return examples_dataset(load_examples)

    seqio.TaskRegistry.remove(name)
    return seqio.TaskRegistry.add(
        name,
        source=seqio.FunctionDataSource(dataset_fn, splits=("train",)),
        preprocessors=[format_and_tokenize(fmt)],
        output_features=output_features(vocabulary),
    )


def _pack_tf(
    tokens: tf.RaggedTensor, length: int, bos_id: int, eos_id: int, pad_id: int
) -> tuple[tf.Tensor, tf.Tensor]:
    """TF twin of `packing.pack` for a batch of sequences ([B, None] -> [B, length])."""
    rows = tokens.nrows()
    sequence = tf.concat(
        [tf.fill([rows, 1], bos_id), tf.cast(tokens[:, : length - 2], tf.int32), tf.fill([rows, 1], eos_id)],
        axis=1,
    )
    ids = sequence.to_tensor(default_value=pad_id, shape=[None, length])
    mask = tf.cast(tf.range(length, dtype=tf.int64)[None, :] < sequence.row_lengths()[:, None], tf.int32)
    return ids, mask


class DualEncoderFeatureConverter(seqio.FeatureConverter):
    """Converts tokenized (query, positive, negative) to fixed-length model inputs.

    Task features: `query`, `positive`, `negative` (int32 [n], no specials).
    Model features: `{query,positive,negative}_{ids,mask}` (int32 [L], L the
    task feature length of that text, special tokens included) and
    `has_negative` (int32 scalar). Longer texts are truncated, not rejected.
    """

    TASK_FEATURES = {k: seqio.FeatureConverter.FeatureSpec(dtype=tf.int32) for k in TEXT_FEATURES}
    MODEL_FEATURES = {
        **{
            k: seqio.FeatureConverter.FeatureSpec(dtype=tf.int32)
            for k in MODEL_FEATURES
            if k != "has_negative"
        },
        "has_negative": seqio.FeatureConverter.FeatureSpec(dtype=tf.int32, rank=0),
    }
    PACKING_FEATURE_DTYPES = {}

    def __init__(self, bos_id: int, eos_id: int, pad_id: int = 0):
        """Initialises the converter.

        Args:
            bos_id: the id put before each text (e.g. [CLS]).
            eos_id: the id put after each text (e.g. [SEP]).
            pad_id: the id filling the rest.
        """
        # Truncation is part of the conversion, so SeqIO's length check, which
        # rejects inputs longer than the feature length, does not apply.
        super().__init__(pack=False, apply_length_check=False)
        self._special_ids = (int(bos_id), int(eos_id), int(pad_id))

    def _convert_features(
        self, ds: tf.data.Dataset, task_feature_lengths: Mapping[str, int]
    ) -> tf.data.Dataset:
        for key, length in task_feature_lengths.items():
            if length < 2:
                raise ValueError(f"feature length of {key!r} must be at least 2 (bos + eos), got {length}")
        pad_id = self._special_ids[2]

        def convert(batch):
            out = {}
            for key in TEXT_FEATURES:
                out[f"{key}_ids"], out[f"{key}_mask"] = _pack_tf(
                    batch[key], task_feature_lengths[key], *self._special_ids
                )
            has_negative = batch["negative"].row_lengths() > 0
            out["negative_ids"] = tf.where(has_negative[:, None], out["negative_ids"], pad_id)
            out["negative_mask"] = tf.where(has_negative[:, None], out["negative_mask"], 0)
            out["has_negative"] = tf.cast(has_negative, tf.int32)
            return out

        # In batches, as a map call per example costs more than the packing.
        ds = ds.ragged_batch(1024).map(convert, num_parallel_calls=tf.data.AUTOTUNE)
        return ds.unbatch()

    def get_model_feature_lengths(self, task_feature_lengths: Mapping[str, int]) -> dict[str, int]:
        lengths = {f"{k}_{part}": task_feature_lengths[k] for k in TEXT_FEATURES for part in ("ids", "mask")}
        lengths["has_negative"] = 1  # Rank 0: SeqIO skips its length check.
        return lengths


def converted_batches(
    task: seqio.Task,
    converter: DualEncoderFeatureConverter,
    lengths: Mapping[str, int],
    batch_size: int = 1024,
) -> Iterator[dict[str, np.ndarray]]:
    """Runs a Task and the converter over its "train" split, in order, a batch at a time.

    Args:
        task: a Task from `register_task`.
        converter: adds special tokens and pads.
        lengths: tokens per text of each of TEXT_FEATURES, special tokens included.
        batch_size: rows per yielded batch (the last may be shorter).

    Yields:
        MODEL_FEATURES -> int32 arrays, [n, lengths[feature]] (`has_negative`: [n]).
    """
    ds = task.get_dataset(sequence_length=lengths, split="train", shuffle=False, num_epochs=1)
    for batch in converter(ds, lengths).batch(batch_size).as_numpy_iterator():
        yield {k: batch[k].astype(np.int32) for k in MODEL_FEATURES}


def materialize(
    task: seqio.Task,
    converter: DualEncoderFeatureConverter,
    lengths: Mapping[str, int],
    batch_size: int = 1024,
) -> dict[str, np.ndarray]:
    """All of `converted_batches`, concatenated.

    Returns:
        MODEL_FEATURES -> int32 arrays, [N, lengths[feature]] (`has_negative`: [N]).
    """
    parts = list(converted_batches(task, converter, lengths, batch_size))
    if not parts:
        return {
            k: np.zeros((0, lengths[k.rsplit("_", 1)[0]]) if k != "has_negative" else (0,), np.int32)
            for k in MODEL_FEATURES
        }
    return {k: np.concatenate([part[k] for part in parts]) for k in MODEL_FEATURES}
