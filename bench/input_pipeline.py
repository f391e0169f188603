r"""Input pipeline examples/s against train step examples/s, for one config.

    python bench/input_pipeline.py --config=configs/gecko_minilm.py [--steps=3] [--batches=200]

Builds the config's input pipeline and its jitted train step (random weights;
speed does not depend on them), times `--batches` batches of the pipeline and
`--steps` train steps after compiling each of their batch shapes, and prints both rates and their
ratio. The issue's target for configs/gecko_minilm.py is a ratio of >= 20.
Batches are assembled with `jax.make_array_from_process_local_data`, as in
training, and that time counts towards the step.
"""

import time

from absl import app
from absl import flags
import jax
from ml_collections import config_flags

from gecko_jax.data.pipeline import TrainData
from gecko_jax.data.pipeline import measure_examples_per_second
from gecko_jax.data.vocabularies import get_vocabulary
from gecko_jax.training import sharding
from gecko_jax.training.train_program import build_train_program

_CONFIG = config_flags.DEFINE_config_file("config", None, "Training config file.")
_STEPS = flags.DEFINE_integer("steps", 3, "Timed train steps (after compiling each batch shape).")
_BATCHES = flags.DEFINE_integer("batches", 200, "Timed pipeline batches.")
flags.mark_flag_as_required("config")


def main(argv):
    del argv
    config = _CONFIG.value
    data = TrainData(
        config.data,
        get_vocabulary(config.model.vocab),
        config.batch_size,
        config.seed,
        jax.process_index(),
        jax.process_count(),
    )
    pipeline_rate = measure_examples_per_second(data, _BATCHES.value)
    print(f"input pipeline: {pipeline_rate:,.0f} examples/s", flush=True)

    mesh = sharding.create_mesh(config.mesh_shape)
    program = build_train_program(config, mesh)
    rng = jax.random.key(config.seed)
    with mesh:
        state = program.init_fn(rng)

        def device_batch(local):
            return {
                k: jax.make_array_from_process_local_data(program.batch_sharding, v) for k, v in local.items()
            }

        local_batches = [next(data) for _ in range(_STEPS.value)]
        # With data.bucket_lengths the batches may differ in shape: each shape
        # is compiled first (filling the jit cache), so the timed steps only run.
        compiled = set()
        for local in local_batches:
            shape = tuple((k, v.shape) for k, v in sorted(local.items()))
            if shape not in compiled:
                program.train_step.lower(state, device_batch(local), rng).compile()
                compiled.add(shape)
        start = time.perf_counter()
        for local in local_batches:
            state, metrics = program.train_step(state, device_batch(local), rng)
        jax.block_until_ready(metrics)
        step_rate = _STEPS.value * config.batch_size / (time.perf_counter() - start)
    print(f"train step: {step_rate:,.1f} examples/s", flush=True)
    print(f"ratio: {pipeline_rate / step_rate:,.0f}x (target >= 20x)")


if __name__ == "__main__":
    app.run(main)
