"""Classification evaluation: logistic regression on embeddings, as MTEB does.

The protocol is that of `mteb` 2.x (`AbsTaskClassification` with its
defaults), so that the numbers are comparable with MTEB's:

* `n_experiments` (10) times, draw `samples_per_label` (8) training texts per
  label: shuffle the list of training indices with a fresh
  `np.random.RandomState(seed)` (seed 42) and keep, in that order, the first
  ones of each label. The shuffled list is carried over, so experiment i sees
  the list shuffled i + 1 times.
* Fit `LogisticRegression(max_iter=100)` on those embeddings, predict every
  test text, and score accuracy and macro F1.
* Report the means over the experiments.

Embeddings are the encoder's output as is (MTEB does not normalise them).
"""

import collections
import dataclasses
import os
import warnings

import numpy as np
from sklearn import exceptions as sklearn_exceptions
from sklearn import linear_model
from sklearn import metrics as sklearn_metrics

from gecko_jax.errors import UserError
from gecko_jax.evaluation.base import TextEncoder
from gecko_jax.evaluation.labeled_csv import LabeledTexts, read_labeled_csv

N_EXPERIMENTS = 10
SAMPLES_PER_LABEL = 8
SEED = 42
MAX_ITER = 100


@dataclasses.dataclass(frozen=True)
class ClassificationDataset:
    """A train and a test split of labelled texts.

    Attributes:
      train: texts the classifier is fitted on (subsampled per experiment).
      test: texts it is scored on.
      path: the folder read.
    """

    train: LabeledTexts
    test: LabeledTexts
    path: str


def load_classification(folder: str) -> ClassificationDataset:
    """Reads `train.csv` and `test.csv` from a folder.

    Args:
      folder: holds both files; see `labeled_csv.read_labeled_csv`.

    Returns:
      The dataset.

    Raises:
      UserError: a file is missing or malformed, or train.csv has fewer than 2
        labels. (A test label that train.csv lacks is allowed; such texts
        count as misclassified, as in MTEB.)
    """
    if not os.path.isdir(folder):
        raise UserError(f"{folder}: expected a folder holding train.csv and test.csv")
    train = read_labeled_csv(os.path.join(folder, "train.csv"))
    test = read_labeled_csv(os.path.join(folder, "test.csv"))
    if len(set(train.labels)) < 2:
        raise UserError(f"{train.path}: needs at least 2 labels to classify")
    return ClassificationDataset(train, test, folder)


def undersample(
    labels: list[str],
    n_experiments: int = N_EXPERIMENTS,
    samples_per_label: int = SAMPLES_PER_LABEL,
    seed: int = SEED,
) -> list[list[int]]:
    """The training indices of each experiment, drawn as MTEB draws them.

    Args:
      labels: the training labels.
      n_experiments: how many draws.
      samples_per_label: at most this many indices per label in each draw.
      seed: seeds a fresh `np.random.RandomState` before every shuffle.

    Returns:
      One list of indices per experiment, in shuffled order.
    """
    order = list(range(len(labels)))
    draws = []
    for _ in range(n_experiments):
        np.random.RandomState(seed).shuffle(order)
        taken = collections.Counter()
        chosen = []
        for index in order:
            if taken[labels[index]] < samples_per_label:
                chosen.append(index)
                taken[labels[index]] += 1
        draws.append(chosen)
    return draws


def score_classification(
    encoder: TextEncoder,
    dataset: ClassificationDataset,
    prompt: str | None = None,
    dim: int | None = None,
    batch_size: int | None = None,
    show_progress: bool = False,
    n_experiments: int = N_EXPERIMENTS,
    samples_per_label: int = SAMPLES_PER_LABEL,
    seed: int = SEED,
) -> dict[str, float | int]:
    """Fits and scores logistic regression on embeddings, MTEB's way.

    Args:
      encoder: the model.
      dataset: train and test texts.
      prompt: instruction prefix for every text.
      dim: Matryoshka prefix width, or None for the full width.
      batch_size: encoder batch size, or None for its default.
      show_progress: draw progress bars on stderr.
      n_experiments: training draws to average over.
      samples_per_label: training texts per label in each draw.
      seed: seed of the draws.

    Returns:
      `accuracy` and `f1` (macro F1), means over the experiments as fractions,
      their standard deviations `accuracy_std` and `f1_std`, and the counts
      `num_train` (texts in one draw, at most), `num_test`, `num_labels`.
    """
    draws = undersample(dataset.train.labels, n_experiments, samples_per_label, seed)
    needed = sorted(set().union(*draws))
    row_of = {index: row for row, index in enumerate(needed)}

    def encode(texts):
        return np.asarray(
            encoder.encode(texts, prompt=prompt, dim=dim, batch_size=batch_size, show_progress=show_progress),
            dtype=np.float32,
        )

    train_embeddings = encode([dataset.train.texts[i] for i in needed])
    test_embeddings = encode(dataset.test.texts)
    accuracies, f1s = [], []
    for draw in draws:
        classifier = linear_model.LogisticRegression(max_iter=MAX_ITER)
        with warnings.catch_warnings():
            # MTEB also stops at 100 iterations, converged or not.
            warnings.simplefilter("ignore", sklearn_exceptions.ConvergenceWarning)
            classifier.fit(
                train_embeddings[[row_of[i] for i in draw]], [dataset.train.labels[i] for i in draw]
            )
        predicted = classifier.predict(test_embeddings)
        accuracies.append(sklearn_metrics.accuracy_score(dataset.test.labels, predicted))
        f1s.append(sklearn_metrics.f1_score(dataset.test.labels, predicted, average="macro"))
    return {
        "accuracy": float(np.mean(accuracies)),
        "accuracy_std": float(np.std(accuracies)),
        "f1": float(np.mean(f1s)),
        "f1_std": float(np.std(f1s)),
        "num_train": max(len(draw) for draw in draws),
        "num_test": len(dataset.test.texts),
        "num_labels": len(set(dataset.train.labels)),
    }
