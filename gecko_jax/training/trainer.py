"""The training loop: `train_and_evaluate(config, workdir)`.

Its sections run in a fixed order: mesh, data, init, shardings, jit, restore,
loop. Where a run starts is decided in one place (`_starting_state`): the
workdir's newest readable checkpoint, else the pretrained weights named by
`model.init`, else a random init. Nothing depends on how often a run was
restarted: the schedule is a function of the step, dropout keys are folded
from the step, and the data stream is a function of (seed, batch index).
"""

import signal
import threading
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from gecko_jax import checkpoint_io
from gecko_jax.data.pipeline import TrainData
from gecko_jax.data.vocabularies import get_vocabulary
from gecko_jax.errors import UserError
from gecko_jax.models import gemma_import
from gecko_jax.models import specs
from gecko_jax.models.bert_import import load_bert_folder, merge_pretrained, resolve_pretrained
from gecko_jax.training import config_checks
from gecko_jax.training import mfu
from gecko_jax.training import sharding
from gecko_jax.training import workdir_guard
from gecko_jax.training.evaluators import Evaluators
from gecko_jax.training.metrics_writer import MetricsWriter, Throughput, mean_metrics
from gecko_jax.training.teacher_batches import Hosts, with_teachers
from gecko_jax.training.train_program import build_train_program


class Preempted(Exception):
    """The run saved a checkpoint and stopped early after a signal; rerunning resumes it.

    Attributes:
      step: the step saved.
      exit_status: 128 + the signal's number, as a shell reports a process the
        signal ended: 143 after SIGTERM (a preemption), 130 after Ctrl-C.
    """

    def __init__(self, step: int, signum: int = signal.SIGTERM):
        name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        super().__init__(f"Stopped at step {step} after {name}; rerun the same command to resume")
        self.step = step
        self.exit_status = 128 + signum


class _StopRequests:
    """Turns SIGTERM (preemption) or Ctrl-C into a step at which every host saves and stops.

    One process watches the signals itself; a second Ctrl-C aborts at once.
    Several processes must stop at the same step, or those still stepping wait
    forever in a collective for those that left: JAX's preemption service
    (started by `jax.distributed.initialize`) catches SIGTERM on any host and
    has them all agree on the step, which Orbax's `reached_preemption`
    reports. The previous handlers come back when the context ends.
    """

    def __init__(self):
        self._alone = jax.process_count() == 1
        self.signum = None
        self._previous = {}

    def __enter__(self) -> "_StopRequests":
        if self._alone and threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum, frame):
        del frame
        if signum == signal.SIGINT and self.signum is not None:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt
        self.signum = signum
        name = "Ctrl-C" if signum == signal.SIGINT else "SIGTERM received"
        again = "; Ctrl-C again aborts without saving" if signum == signal.SIGINT else ""
        print(f"{name}: saving a checkpoint after this step, then exiting{again}", flush=True)

    def stop_at(self, step: int, manager) -> bool:
        """Whether to save and stop after `step`; the same answer on every host."""
        if not self._alone and manager.reached_preemption(step):
            self.signum = signal.SIGTERM
        return self.signum is not None


def _import_pretrained(spec: str):
    """Parameters named by `model.init`, any spec `models.specs.resolve` accepts: a training workdir
    (its newest checkpoint, e.g. the previous stage of a recipe), a Gemma checkpoint, or a BERT /
    sentence-transformers one."""
    model = specs.resolve(spec)
    if model.kind == specs.WORKDIR:
        return checkpoint_io.restore_params(model.folder)[1]
    if model.kind == specs.GEMMA:
        return gemma_import.to_imported_model(gemma_import.load_checkpoint(model.spec)).params
    if model.kind == specs.BERT_FOLDER:
        return load_bert_folder(model.folder).params
    return resolve_pretrained(model.spec).params


def _starting_state(config, manager, abstract_state, shardings, init_fn, tx, rng):
    """(state, data_state) from a checkpoint, pretrained weights or scratch."""
    abstract_with_shardings = jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract_state, shardings
    )
    restored = checkpoint_io.restore_latest(manager, abstract_with_shardings)
    if restored is not None:
        step, state, data_state = restored
        print(f"Resuming from checkpoint step {step} in {manager.directory}", flush=True)
        return state, data_state
    state = init_fn(rng)
    if config.model.init:
        # The random optimizer state is freed before the new one is made: for
        # Gemma 3 270M the copies alone would fill 8 GB.
        params = _with_pretrained(state.params, shardings.params, _import_pretrained(config.model.init))
        state = state.replace(params=None, opt_state=None)
        opt_state = jax.jit(tx.init, out_shardings=shardings.opt_state)(params)
        state = state.replace(params=params, opt_state=opt_state)
        print(f"Initialised the tower from pretrained weights {config.model.init!r}", flush=True)
    return state, None


def _with_pretrained(params, param_shardings, pretrained):
    """`params` (sharded, possibly over several hosts) with the `pretrained` leaves put in.

    Every host reads the whole pretrained checkpoint into its memory, and puts
    only the shards its own devices hold: the sharded random init is never
    gathered, which on several hosts is not possible.
    """
    shapes = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params)
    # Checks names and shapes; leaves not in the checkpoint stay ShapeDtypeStructs.
    merged = merge_pretrained(shapes, pretrained)

    def put(value, live, leaf_sharding):
        if isinstance(value, jax.ShapeDtypeStruct):
            return live
        return jax.make_array_from_callback(value.shape, leaf_sharding, lambda index: value[index])

    return jax.tree.map(
        put, merged, params, param_shardings, is_leaf=lambda x: isinstance(x, jax.ShapeDtypeStruct)
    )


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Trains the configured dual encoder in `workdir`, resuming if it holds checkpoints.

    Args:
      config: a config built on `gecko_jax.config_base.base_config()`.
      workdir: where checkpoints, config.json, metrics.jsonl and TensorBoard files go.

    Returns:
      The metrics of the final evaluation (empty if none is configured).

    Raises:
      Preempted: SIGTERM or Ctrl-C stopped the run after a checkpoint, before the last step.
      UserError: a config value is out of range, the workdir may not be trained in (see
        `workdir_guard`), or another run holds it.
    """
    # Everything that can be refused is, before the workdir is touched.
    config_checks.check_config(config)
    mesh = sharding.create_mesh(config.mesh_shape)
    config_checks.check_for_mesh(config, mesh)
    with workdir_guard.claimed(workdir) as absolute_workdir:
        return _train_in(config, absolute_workdir, mesh)


def _train_in(config: ml_collections.ConfigDict, workdir: str, mesh) -> dict:
    """`train_and_evaluate` in a checked and claimed `workdir` (absolute), on `mesh`."""
    changes = checkpoint_io.config_changes(workdir, config)
    if changes:
        # Resuming with other settings is allowed (e.g. more steps), but the
        # result is then not the run the checkpoints came from: say so.
        print(
            f"warning: {workdir} was started with another config; changed: {'; '.join(changes)}", flush=True
        )
    logging.info("Mesh %s over %d devices", dict(mesh.shape), mesh.size)

    # Data.
    vocabulary = get_vocabulary(config.model.vocab)
    data = TrainData(
        config.data, vocabulary, config.batch_size, config.seed, jax.process_index(), jax.process_count()
    )
    print(
        f"Training data: {data.num_examples} examples, batch {config.batch_size}, {config.total_steps} steps",
        flush=True,
    )
    data = with_teachers(
        config,
        data,
        workdir,
        Hosts(jax.process_index(), jax.process_count(), multihost_utils.sync_global_devices),
    )

    # Init, shardings and jit (abstract: nothing is allocated until init_fn runs).
    program = build_train_program(config, mesh)
    model, tx, rules = program.model, program.tx, program.rules
    shardings, batch_sharding = program.shardings, program.batch_sharding
    train_step = program.train_step
    init_rng, dropout_rng = jax.random.split(jax.random.key(config.seed))

    # Restore and loop, with the mesh and rules in force so that every
    # activation constraint of the tower reaches the compiled programs.
    with sharding.activated(mesh, rules), _StopRequests() as stop_requests:
        # Restore.
        manager = checkpoint_io.create_manager(workdir, config.keep_checkpoints, config.async_checkpointing)
        state, data_state = _starting_state(
            config, manager, program.abstract_state, shardings, program.init_fn, tx, init_rng
        )
        # Only now: a config whose model does not fit the checkpoints is refused
        # above and must not replace the one they were trained with.
        checkpoint_io.write_config(workdir, config)
        checkpoint_io.write_gin_config(workdir)
        if data_state is not None:
            data.set_state(data_state)
        start_step = int(jax.device_get(state.step))

        # Loop.
        evaluators = Evaluators(config, model, vocabulary, workdir, mesh, start_step)
        writer = MetricsWriter(workdir, config.total_steps, start_step)
        divergence = _DivergenceGuard(manager, writer, mesh)
        results = {}
        if start_step == 0:
            results = evaluators.run(0, state.params, writer)
        throughput = Throughput(mfu.peak_flops_per_second(mesh.devices.flat))
        step_flops = _StepFlops(train_step, dropout_rng, mesh.size, throughput)
        history, history_flops = [], []
        step = start_step
        while step < config.total_steps:
            local = next(data)
            batch = {k: jax.make_array_from_process_local_data(batch_sharding, v) for k, v in local.items()}
            history_flops.append(step_flops(state, batch))
            state, metrics = train_step(state, batch, dropout_rng)
            step += 1
            history.append(metrics)
            last = step == config.total_steps
            if step % config.log_every == 0 or last:
                divergence.check_losses(step, history)
                _log(step, history, throughput, writer, config.batch_size, history_flops)
                history, history_flops = [], []
            stop = stop_requests.stop_at(step, manager)
            save = last or stop or (config.checkpoint_every and step % config.checkpoint_every == 0)
            evaluate = not last and evaluators.is_due(step)
            if not (save or evaluate):
                continue
            # Saving and evaluating are not training: their time is left out of the rates.
            with throughput.paused(state):
                if save:
                    # A non-finite state must never become the checkpoint reruns resume from.
                    divergence.check_losses(step, history)
                    divergence.check_params(step, state.params)
                    checkpoint_io.save(manager, step, state, data.get_state())
                if stop and not last:
                    manager.wait_until_finished()
                    writer.close()
                    raise Preempted(step, stop_requests.signum)
                if evaluate:
                    evaluators.run(step, state.params, writer)
        if start_step < config.total_steps or not results:
            results = evaluators.run(config.total_steps, state.params, writer)
        manager.wait_until_finished()
        writer.close()
        return results


class _DivergenceGuard:
    """Stops a run whose loss or parameters stop being finite, before anything of it is saved.

    The logged loss alone is not enough: a save between two log lines would
    store the diverged parameters, and every rerun would resume into them. So
    the losses of every step since the last check are read, and the parameters
    are checked before each save (one pass over them, small beside a save).
    """

    def __init__(self, manager, writer: MetricsWriter, mesh):
        self._manager = manager
        self._writer = writer
        replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
        self._all_finite = jax.jit(
            lambda tree: jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)])),
            out_shardings=replicated,
        )

    def check_losses(self, step: int, history: list) -> None:
        losses = np.asarray([float(m["loss"]) for m in jax.device_get(history)])
        bad = np.flatnonzero(~np.isfinite(losses))
        if bad.size:
            first = step - len(history) + 1 + int(bad[0])
            self._stop(first, f"the loss is {losses[bad[0]]}")

    def check_params(self, step: int, params) -> None:
        if not bool(jax.device_get(self._all_finite(params))):
            self._stop(step, "a parameter is not finite")

    def _stop(self, step: int, what: str) -> None:
        # Saves already under way finish first: abandoned, Orbax prints pages of errors.
        self._manager.wait_until_finished()
        self._writer.close()
        saved = self._manager.latest_step()
        resume = (
            f"rerunning resumes from checkpoint step {saved}"
            if saved is not None
            else "no checkpoint was saved, so a rerun starts from the beginning"
        )
        raise UserError(
            f"training diverged at step {step}: {what}; nothing from that step on "
            f"was saved. Lower --config.optimizer.learning_rate or check the data; "
            f"{resume}"
        )


class _StepFlops:
    """The hardware FLOPs of one train step over the whole mesh, from XLA's cost analysis.

    The step compiles once per batch shape (several with `data.bucket_lengths`).
    Each new shape is compiled here, by lowering with the step's real arguments,
    which fills the jit cache that the call after it hits; the compile time is
    left out of the throughput. It is the step that runs per batch: with
    GradCache the two-pass step; with gradient accumulation XLA counts its
    conditional optimizer update in every step (a few FLOPs per parameter,
    small beside forward and backward).
    """

    def __init__(self, train_step, rng, num_devices: int, throughput: Throughput):
        self._train_step = train_step
        self._rng = rng
        self._num_devices = num_devices
        self._throughput = throughput
        self._by_shape = {}

    def __call__(self, state, batch) -> float | None:
        shape = tuple((k, v.shape) for k, v in sorted(batch.items()))
        if shape not in self._by_shape:
            # The steps before must not run during the time left out.
            jax.block_until_ready(state)
            start = time.perf_counter()
            compiled = self._train_step.lower(state, batch, self._rng).compile()
            per_device = mfu.compiled_flops(compiled)
            self._by_shape[shape] = None if per_device is None else per_device * self._num_devices
            seconds = time.perf_counter() - start
            self._throughput.skip(seconds)
            logging.info(
                "train step compiled (or loaded from the compilation cache) for text "
                "lengths %s in %.1f s (%d batch shapes so far)",
                {k: v[1] for k, v in shape if k.endswith("_ids")},
                seconds,
                len(self._by_shape),
            )
        return self._by_shape[shape]


def _log(
    step: int,
    history: list,
    throughput: Throughput,
    writer: MetricsWriter,
    batch_size: int,
    history_flops: list,
) -> None:
    fetched = jax.device_get(history)
    metrics = mean_metrics(fetched)
    # The rate in force now, not the interval's mean (which lags during warmup).
    metrics["learning_rate"] = float(fetched[-1]["learning_rate"])
    hardware_flops = None if None in history_flops else sum(history_flops)
    throughput.add(
        batch_size * len(fetched),
        sum(float(h["tokens"]) for h in fetched),
        sum(float(h["model_flops"]) for h in fetched),
        hardware_flops,
    )
    metrics.pop("tokens")
    metrics.pop("model_flops")
    metrics.update(throughput.rates())
    writer.console(step, metrics)
    writer.scalars(step, metrics)
