"""The academic datasets of the Gecko mixture: one registration each.

A `DatasetSpec` says where a dataset's raw files are found and how they become
examples. Offline, the files are read from the manual folder
`DATA_DIR/<folder>/` (the layout of ../shared/data): the first of the
`manual_files` alternatives that exists is used (e.g. the official SQuAD
train-v1.1.json, else the bundled slice). Online, when that folder lacks them,
`downloads` are fetched from the official URLs and `read_downloaded` reads
them. Adding a dataset is one `_register(DatasetSpec(...))` below; the TFDS
builder (`builder.py`) and the mixture (`--config.data.mixture`) pick it up.
"""

import dataclasses
import json
import os
from typing import Callable, Mapping

from gecko_jax.data import academic
from gecko_jax.data import jsonl
from gecko_jax.data import sources

# Reads {file key: local path} into examples, with a seed for any random draw.
Reader = Callable[[Mapping[str, str], int], list[jsonl.Example]]


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """How to find and read one dataset.

    Attributes:
        name: the mixture name, e.g. "banking77".
        folder: the manual folder under data_dir.
        manual_files: file key -> file names tried in order inside `folder`.
        read: reads the manual files.
        downloads: file key -> (official URL, path inside the extracted
            download, '' when the URL is the file itself).
        read_downloaded: reads the downloaded files; None = `read`.
        description: one line for the TFDS builder config.
    """

    name: str
    folder: str
    manual_files: Mapping[str, tuple[str, ...]]
    read: Reader
    downloads: Mapping[str, tuple[str, str]]
    read_downloaded: Reader | None = None
    description: str = ""


DATASETS: dict[str, DatasetSpec] = {}


def _register(spec: DatasetSpec) -> None:
    DATASETS[spec.name] = spec


def _snli_official(paths: Mapping[str, str], seed: int) -> list[jsonl.Example]:
    """SNLI 1.0 JSONL (`sentence1`, `sentence2`, `gold_label`) into triplets."""
    del seed
    with open(paths["train"], encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return sources.nli_triplets(
        ((r["sentence1"], r["sentence2"], r["gold_label"]) for r in rows), "snli-train"
    )


def _snli_senteval(paths: Mapping[str, str], seed: int) -> list[jsonl.Example]:
    del seed
    folder, split = os.path.dirname(paths["premises"]), paths["premises"].rsplit(".", 1)[1]
    return sources.snli(folder, split=split)


_register(
    DatasetSpec(
        name="squad",
        folder="squad",
        description="SQuAD v1.1 question -> titled paragraph, another paragraph as negative",
        manual_files={"train": ("train-v1.1.json", "train-du-split.json")},
        read=lambda paths, seed: sources.squad(paths["train"], seed=seed),
        downloads={"train": ("https://rajpurkar.github.io/SQuAD-explorer/dataset/train-v1.1.json", "")},
    )
)
_register(
    DatasetSpec(
        name="snli",
        folder="snli",
        description="SNLI (premise, entailment, contradiction) triplets",
        manual_files={"premises": ("s1.train", "s1.dev")},
        read=_snli_senteval,
        downloads={
            "train": ("https://nlp.stanford.edu/projects/snli/snli_1.0.zip", "snli_1.0/snli_1.0_train.jsonl")
        },
        read_downloaded=_snli_official,
    )
)
_register(
    DatasetSpec(
        name="stsb",
        folder="stsb",
        description="STS Benchmark train pairs scoring >= 4",
        manual_files={"train": ("sts-train.csv",)},
        read=lambda paths, seed: academic.stsb(paths["train"]),
        downloads={
            "train": (
                "http://ixa2.si.ehu.eus/stswiki/images/4/48/Stsbenchmark.tar.gz",
                "stsbenchmark/sts-train.csv",
            )
        },
    )
)
_register(
    DatasetSpec(
        name="sick",
        folder="sick",
        description="SICK train pairs with relatedness >= 4",
        manual_files={"train": ("SICK_train.txt",)},
        read=lambda paths, seed: academic.sick(paths["train"]),
        downloads={
            "train": ("http://alt.qcri.org/semeval2014/task1/data/uploads/sick_train.zip", "SICK_train.txt")
        },
    )
)
_register(
    DatasetSpec(
        name="banking77",
        folder="banking77",
        description="Banking77 intents as id-suffixed triplets",
        manual_files={"train": ("train.csv",)},
        read=lambda paths, seed: academic.banking77(paths["train"], seed),
        downloads={
            "train": (
                "https://raw.githubusercontent.com/PolyAI-LDN/task-specific-datasets/master/"
                "banking_data/train.csv",
                "",
            )
        },
    )
)
_register(
    DatasetSpec(
        name="trec",
        folder="trec",
        description="TREC question types as id-suffixed triplets",
        manual_files={"train": ("train_5500.label",)},
        read=lambda paths, seed: academic.trec(paths["train"], seed),
        downloads={"train": ("https://cogcomp.seas.upenn.edu/Data/QA/QC/train_5500.label", "")},
    )
)
_register(
    DatasetSpec(
        name="mr",
        folder="sentiment",
        description="MR movie-review polarity as id-suffixed triplets",
        manual_files={"pos": ("rt-polarity.pos",), "neg": ("rt-polarity.neg",)},
        read=lambda paths, seed: academic.movie_reviews(os.path.dirname(paths["pos"]), seed),
        downloads={
            "pos": (
                "http://www.cs.cornell.edu/people/pabo/movie-review-data/rt-polaritydata.tar.gz",
                "rt-polaritydata/rt-polarity.pos",
            ),
            "neg": (
                "http://www.cs.cornell.edu/people/pabo/movie-review-data/rt-polaritydata.tar.gz",
                "rt-polaritydata/rt-polarity.neg",
            ),
        },
    )
)
_register(
    DatasetSpec(
        name="stackoverflow",
        folder="stackoverflow",
        description="StackOverflow titles as same-label pairs",
        manual_files={"titles": ("title_StackOverflow.txt",), "labels": ("label_StackOverflow.txt",)},
        read=lambda paths, seed: academic.stackoverflow(os.path.dirname(paths["titles"]), seed),
        downloads={
            key: (f"https://raw.githubusercontent.com/jacoxu/StackOverflow/master/rawText/{name}", "")
            for key, name in (("titles", "title_StackOverflow.txt"), ("labels", "label_StackOverflow.txt"))
        },
    )
)
_register(
    DatasetSpec(
        name="wikiqa",
        folder="wikiqa",
        description="WikiQA answer-sentence retrieval",
        manual_files={"train": ("train.txt",)},
        read=lambda paths, seed: academic.answer_selection(paths["train"], "wikiqa", seed),
        downloads={
            "train": (
                "https://download.microsoft.com/download/E/5/F/E5FCFCEE-7005-4814-853D-DAA7C66507E0/"
                "WikiQACorpus.zip",
                "WikiQACorpus/WikiQA-train.txt",
            )
        },
    )
)
_register(
    DatasetSpec(
        name="trecqa",
        folder="trecqa",
        description="TrecQA answer-sentence retrieval",
        manual_files={"train": ("train.txt",)},
        read=lambda paths, seed: academic.answer_selection(paths["train"], "trecqa", seed),
        downloads={
            "train": (
                "https://raw.githubusercontent.com/FreedomIntelligence/qnn/"
                "77f549372d4371e7f2d52e77bc18df5096dd4779/data/QA/trec/train.txt",
                "",
            )
        },
    )
)


def manual_paths(spec: DatasetSpec, manual_dir: str) -> dict[str, str] | None:
    """The manual files of `spec` found in `manual_dir`, or None if any is missing."""
    found = {}
    for key, names in spec.manual_files.items():
        for name in names:
            if os.path.isfile(os.path.join(manual_dir, name)):
                found[key] = os.path.join(manual_dir, name)
                break
        else:
            return None
    return found
