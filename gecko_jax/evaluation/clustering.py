"""Clustering evaluation: V-measure of mini-batch k-means, as MTEB does.

The protocol is `mteb`'s `ClusteringEvaluator` (used by its clustering tasks
of MTEB v1, StackOverflowClustering among them): embed every text, run
`MiniBatchKMeans(n_clusters=<number of gold labels>, batch_size=500,
n_init="auto", random_state=42)`, and score its assignment against the gold
labels with V-measure. Embeddings are the encoder's output as is.
"""

import numpy as np
from sklearn import cluster as sklearn_cluster
from sklearn import metrics as sklearn_metrics

from gecko_jax.errors import UserError
from gecko_jax.evaluation.base import TextEncoder
from gecko_jax.evaluation.labeled_csv import LabeledTexts, read_labeled_csv

KMEANS_BATCH_SIZE = 500
SEED = 42


def load_clustering(path: str) -> LabeledTexts:
    """Reads a CSV of texts and gold cluster labels.

    Args:
      path: see `labeled_csv.read_labeled_csv`.

    Returns:
      The texts and labels.

    Raises:
      UserError: the file is malformed or has fewer than 2 labels.
    """
    dataset = read_labeled_csv(path)
    if len(set(dataset.labels)) < 2:
        raise UserError(f"{path}: needs at least 2 distinct labels to cluster")
    return dataset


def cluster_v_measure(embeddings: np.ndarray, labels: list[str], seed: int = SEED) -> float:
    """Clusters `embeddings` into as many clusters as labels; V-measure.

    Args:
      embeddings: float [N, D].
      labels: N gold labels.
      seed: k-means seed.

    Returns:
      V-measure in [0, 1].
    """
    kmeans = sklearn_cluster.MiniBatchKMeans(
        n_clusters=len(set(labels)),
        batch_size=KMEANS_BATCH_SIZE,
        n_init="auto",
        compute_labels=True,
        random_state=seed,
    )
    kmeans.fit(embeddings)
    return float(sklearn_metrics.v_measure_score(labels, kmeans.labels_))


def score_clustering(
    encoder: TextEncoder,
    dataset: LabeledTexts,
    prompt: str | None = None,
    dim: int | None = None,
    batch_size: int | None = None,
    show_progress: bool = False,
    seed: int = SEED,
) -> dict[str, float | int]:
    """Embeds the texts, clusters them, and scores the clusters.

    Args:
      encoder: the model.
      dataset: texts and gold labels.
      prompt: instruction prefix for every text.
      dim: Matryoshka prefix width, or None for the full width.
      batch_size: encoder batch size, or None for its default.
      show_progress: draw a progress bar on stderr.
      seed: k-means seed.

    Returns:
      `v_measure` (a fraction), `num_texts` and `num_labels`.
    """
    embeddings = np.asarray(
        encoder.encode(
            dataset.texts, prompt=prompt, dim=dim, batch_size=batch_size, show_progress=show_progress
        ),
        dtype=np.float32,
    )
    return {
        "v_measure": cluster_v_measure(embeddings, dataset.labels, seed),
        "num_texts": len(dataset.texts),
        "num_labels": len(set(dataset.labels)),
    }
