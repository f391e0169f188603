r"""Writes the paragraphs of a SQuAD v1.1 file as a FRet passages JSONL.

    python data_pipelines/fret/squad_passages.py \
        --squad=../shared/data/squad/train-du-split.json --output=/tmp/squad_passages.jsonl

One line per distinct paragraph: {"id": "<article>-<paragraph>", "title":
article title, "text": paragraph}, the documents of the SQuAD retrieval
evaluation (gecko_jax.evaluation.retrieval.load_squad). The questions are
left out: FRet writes its own.
"""

import json
import sys

from absl import flags

from gecko_jax import cli
from gecko_jax.evaluation.retrieval import load_squad

_SQUAD = flags.DEFINE_string("squad", None, "A SQuAD v1.1 JSON file.")
_OUTPUT = flags.DEFINE_string("output", None, "The passages JSONL to write.")


def main(argv: list[str]) -> None:
    cli.check_args(argv, _SQUAD, _OUTPUT)
    corpus = load_squad(_SQUAD.value).corpus
    with open(_OUTPUT.value, "w", encoding="utf-8") as f:
        for doc_id, doc in corpus.items():
            f.write(
                json.dumps({"id": doc_id, "title": doc["title"], "text": doc["text"]}, ensure_ascii=False)
                + "\n"
            )
    print(f"squad_passages: wrote {len(corpus)} passages to {_OUTPUT.value}", file=sys.stderr)


if __name__ == "__main__":
    cli.run(main)
