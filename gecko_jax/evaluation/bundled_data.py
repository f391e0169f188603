"""Writes the bundled real data (../shared/data) in the evaluation formats.

`launch/evaluate.py` reads BEIR folders, train/test CSV folders and CSV files;
the bundled data comes in other layouts. These functions convert it, for the
README's evaluation table and for the tests (which convert at run time, small
subsets, instead of keeping copies of the data in the repository):

* SQuAD v1.1 JSON -> a BEIR folder (paragraphs are documents);
* Banking77 `train.csv` -> a folder with a seeded random train/test split;
* StackOverflow titles and labels (two line-aligned files) -> one CSV.
"""

import json
import os
import random

from gecko_jax.errors import UserError
from gecko_jax.evaluation.labeled_csv import read_labeled_csv, write_labeled_csv
from gecko_jax.evaluation.retrieval import load_squad


def squad_to_beir(
    squad_path: str,
    folder: str,
    max_articles: int | None = None,
    max_queries: int | None = None,
    seed: int = 0,
) -> None:
    """Writes a SQuAD v1.1 file as a BEIR folder with a `test` split.

    Args:
      squad_path: the SQuAD JSON file.
      folder: where corpus.jsonl, queries.jsonl and qrels/test.tsv go.
      max_articles: keep only the paragraphs and questions of the first N
        articles (a smaller corpus), or None for all.
      max_queries: then keep a seeded random sample of N questions (the
        corpus stays whole), or None for all.
      seed: seeds the sample.
    """
    dataset = load_squad(squad_path)
    corpus = {
        doc_id: doc
        for doc_id, doc in dataset.corpus.items()
        if max_articles is None or int(doc_id.split("-")[0]) < max_articles
    }
    query_ids = [query_id for query_id, judgements in dataset.qrels.items() if set(judgements) <= set(corpus)]
    if max_queries is not None and max_queries < len(query_ids):
        query_ids = random.Random(seed).sample(query_ids, max_queries)
    os.makedirs(os.path.join(folder, "qrels"), exist_ok=True)
    with open(os.path.join(folder, "corpus.jsonl"), "w", encoding="utf-8") as f:
        for doc_id, doc in corpus.items():
            f.write(json.dumps({"_id": doc_id, **doc}) + "\n")
    with open(os.path.join(folder, "queries.jsonl"), "w", encoding="utf-8") as f:
        for query_id in query_ids:
            f.write(json.dumps({"_id": query_id, "text": dataset.queries[query_id]}) + "\n")
    with open(os.path.join(folder, "qrels", "test.tsv"), "w", encoding="utf-8") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        for query_id in query_ids:
            for doc_id, relevance in dataset.qrels[query_id].items():
                f.write(f"{query_id}\t{doc_id}\t{relevance}\n")


def split_train_test(
    csv_path: str, folder: str, test_fraction: float = 0.25, max_rows: int | None = None, seed: int = 0
) -> None:
    """Splits a labelled CSV into `folder/train.csv` and `folder/test.csv`.

    Args:
      csv_path: a CSV with `text` and `label` (or `category`) columns.
      folder: where the two files go.
      test_fraction: share of the (kept) rows that go to test.
      max_rows: keep a seeded random sample of this many rows first, or None.
      seed: seeds the sample and the split.

    Raises:
      UserError: the fraction is not in (0, 1).
    """
    if not 0 < test_fraction < 1:
        raise UserError(f"test_fraction must be in (0, 1), got {test_fraction}")
    data = read_labeled_csv(csv_path)
    order = list(range(len(data.texts)))
    random.Random(seed).shuffle(order)
    if max_rows is not None:
        order = order[:max_rows]
    num_test = round(len(order) * test_fraction)
    os.makedirs(folder, exist_ok=True)
    for name, rows in (("test", order[:num_test]), ("train", order[num_test:])):
        write_labeled_csv(
            os.path.join(folder, f"{name}.csv"), [data.texts[i] for i in rows], [data.labels[i] for i in rows]
        )


def stackoverflow_to_csv(
    stackoverflow_dir: str, csv_path: str, max_rows: int | None = None, seed: int = 0
) -> None:
    """Joins `title_StackOverflow.txt` and `label_StackOverflow.txt` into a CSV.

    Args:
      stackoverflow_dir: the folder of the two line-aligned files.
      csv_path: the CSV to write (`text,label`).
      max_rows: keep a seeded random sample of this many titles, or None.
      seed: seeds the sample.

    Raises:
      UserError: the files are missing or do not have the same line count.
    """
    paths = [os.path.join(stackoverflow_dir, f"{kind}_StackOverflow.txt") for kind in ("title", "label")]
    for path in paths:
        if not os.path.isfile(path):
            raise UserError(f"{path}: no such file")
    titles, labels = (_stripped_lines(path) for path in paths)
    if len(titles) != len(labels):
        raise UserError(f"{stackoverflow_dir}: {len(titles)} titles but {len(labels)} labels")
    rows = [i for i in range(len(titles)) if titles[i]]
    if max_rows is not None:
        rows = sorted(random.Random(seed).sample(rows, min(max_rows, len(rows))))
    write_labeled_csv(csv_path, [titles[i] for i in rows], [labels[i] for i in rows])


def _stripped_lines(path: str) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return [line.strip() for line in f]
