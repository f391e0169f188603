"""The pod path: `launch/train.py` as 2 processes of 2 devices equals 1 process of 4.

Every test starts the real launch script (see `pod_harness.py`): two
processes joined through `jax.distributed` on 127.0.0.1, as two hosts of a
slice, against one process holding all four devices, on the same global mesh.
Covered: scratch, training-workdir, Gemma-folder and MiniLM starts under the
`dp`, `fsdp` and `fsdp_tp` presets (each start and each preset at least once); GradCache,
gradient accumulation, a Jasper teacher run, an XTR tower and data prepared on Beam;
in-training evaluation and the files only process 0 writes; and the faults of a pod:
every process killed, SIGTERM to one host (a preemption), one process killed.
"""

import json
import pathlib
import re
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from gecko_jax import checkpoint_io
from gecko_jax.data import sources
from gecko_jax.encoder import Encoder
import pod_harness

pytestmark = pytest.mark.slow

GECKO = "--config=configs/gecko_768.py:runlocal"
FSDP = ("--config.mesh_shape.data=1", "--config.mesh_shape.fsdp=-1")
PROBE = ["who wrote the origin of species", "a cat sat on the mat", "rain is expected today"]
# Long enough that a signal sent at step 3, 5 or 9 lands before the end.
FAULT_STEPS = 12
# The pod form: FSDP over both processes (a resumed FSDP run once hung on
# executables that the compilation cache gave the processes differently).
FAULT_RUN = (
    GECKO,
    f"--config.total_steps={FAULT_STEPS}",
    "--config.checkpoint_every=2",
    *FSDP,
    "--config.sharding=fsdp",
)


def _max_abs_diff(workdir_a, workdir_b) -> float:
    params_a = checkpoint_io.restore_params(str(workdir_a))[1]
    params_b = checkpoint_io.restore_params(str(workdir_b))[1]
    return max(jax.tree.leaves(jax.tree.map(lambda a, b: float(np.max(np.abs(a - b))), params_a, params_b)))


def _train_both(tmp_path: pathlib.Path, args) -> tuple[pathlib.Path, pathlib.Path]:
    """Trains `args` as 2 processes x 2 devices and as 1 process x 4; returns both workdirs."""
    pod, single = tmp_path / "two_processes", tmp_path / "one_process"
    pod_harness.train([*args, f"--workdir={pod}"], tmp_path / "logs_pod", 2, 2)
    pod_harness.train([*args, f"--workdir={single}"], tmp_path / "logs_single", 1, 4)
    return pod, single


@pytest.fixture(scope="module")
def gecko_workdir(tmp_path_factory) -> pathlib.Path:
    """A finished 3-step runlocal workdir: a pretrained start, as a recipe's next stage."""
    root = tmp_path_factory.mktemp("gecko_start")
    pod_harness.train([GECKO, "--config.total_steps=3", f"--workdir={root / 'run'}"], root / "logs", 1, 2)
    return root / "run"


@pytest.fixture(scope="module")
def gemma_folder(gecko_workdir) -> pathlib.Path:
    """The workdir exported as a Gemma folder (safetensors), as a released checkpoint is."""
    folder = gecko_workdir.parent / "exported"
    subprocess.run(
        [
            sys.executable,
            str(pod_harness.REPO / "launch" / "export.py"),
            f"--model={gecko_workdir}",
            f"--output={folder}",
        ],
        check=True,
        capture_output=True,
        cwd=pod_harness.REPO,
    )
    return folder


@pytest.mark.parametrize("case", ["workdir_fsdp_accumulation", "gemma_folder_fsdp_tp"])
def test_pretrained_start_equals_one_process(tmp_path, case, gecko_workdir, gemma_folder):
    if case == "workdir_fsdp_accumulation":
        # The pod form of the main job: FSDP over both hosts from a pretrained start.
        args = [
            GECKO,
            "--config.total_steps=4",
            f"--config.model.init={gecko_workdir}",
            *FSDP,
            "--config.sharding=fsdp",
            "--config.optimizer.grad_accum_steps=2",
        ]
    else:
        args = [
            GECKO,
            "--config.total_steps=3",
            f"--config.model.init=hf:{gemma_folder}",
            *FSDP,
            "--config.mesh_shape.tensor=2",
            "--config.sharding=fsdp_tp",
        ]
    pod, single = _train_both(tmp_path, args)
    assert (
        "Initialised the tower from pretrained weights"
        in (tmp_path / "logs_pod" / "process_1.log").read_text()
    )
    assert _max_abs_diff(pod, single) <= 1e-5


@pytest.mark.parametrize("case", ["xtr_minilm_fsdp", "jasper_teacher_dp"])
def test_other_recipes_equal_one_process(tmp_path, case):
    if case == "xtr_minilm_fsdp":
        # XTR's runlocal starts from MiniLM and trains a multi-vector tower.
        args = ["--config=configs/xtr.py:runlocal", *FSDP, "--config.sharding=fsdp"]
    else:
        # Teacher vectors are embedded once, by process 0, and read by every host.
        args = ["--config=configs/jasper_distill.py:runlocal", "--config.sharding=dp"]
    pod, single = _train_both(tmp_path, args)
    assert _max_abs_diff(pod, single) <= 1e-5


def test_data_prepared_on_beam_equals_one_process(tmp_path):
    # Two input files become a two-shard folder; each process reads only its rows of it.
    lines = pathlib.Path(sources.bundled_path()).read_text().splitlines(keepends=True)
    (tmp_path / "a.jsonl").write_text("".join(lines[:40]))
    (tmp_path / "b.jsonl").write_text("".join(lines[40:]))
    folder = tmp_path / "prepared"
    subprocess.run(
        [
            sys.executable,
            str(pod_harness.REPO / "data_pipelines" / "prepare_data.py"),
            GECKO,
            f"--input={tmp_path}/*.jsonl",
            f"--output={folder}",
        ],
        check=True,
        capture_output=True,
        cwd=pod_harness.REPO,
    )
    pod, single = _train_both(
        tmp_path,
        [
            GECKO,
            "--config.total_steps=4",
            f"--config.data.train_files={folder}",
            "--config.data.bucket_lengths=True",
            *FSDP,
            "--config.sharding=fsdp",
        ],
    )
    assert _max_abs_diff(pod, single) <= 1e-5


def test_scratch_fsdp_grad_cache_with_evaluation_written_once(tmp_path, shared_data):
    del shared_data  # The STS file comes from there.
    # FSDP: the evaluated parameters are sharded over both processes.
    args = [
        GECKO,
        "--config.total_steps=4",
        *FSDP,
        "--config.sharding=fsdp",
        "--config.grad_cache.chunk_size=4",
        "--config.evals={'sts': {'task': 'sts', 'data': 'sick/SICK_trial.txt'}}",
        "--config.best_metric=evals.sts.spearman",
    ]
    pod, single = _train_both(tmp_path, args)
    assert _max_abs_diff(pod, single) <= 1e-5

    # Files of the run: written once, by process 0.
    train_steps = [
        json.loads(line)["step"]
        for line in (pod / "metrics.jsonl").read_text().splitlines()
        if "train.loss" in line
    ]
    assert train_steps == [1, 2, 3, 4]
    evaluated = [json.loads(line) for line in (pod / "eval.jsonl").read_text().splitlines()]
    assert [e["step"] for e in evaluated] == [0, 4]
    single_evaluated = [json.loads(line) for line in (single / "eval.jsonl").read_text().splitlines()]
    for ours, reference in zip(evaluated, single_evaluated):
        assert ours["sts.spearman"] == pytest.approx(reference["sts.spearman"], abs=1e-4)
    assert len(list((pod / "tensorboard").iterdir())) == 1
    best = json.loads((pod / "best" / "best.json").read_text())
    assert best["step"] in (0, 4)
    for index in range(2):
        output = (tmp_path / "logs_pod" / f"process_{index}.log").read_text()
        assert bool(re.search(r"^eval step 4 ", output, re.MULTILINE)) == (index == 0)

    # The workdir loads in one process, and exports, with the same embeddings.
    expected = Encoder.load(str(single)).encode(PROBE)
    np.testing.assert_allclose(Encoder.load(str(pod)).encode(PROBE), expected, atol=1e-5)
    exported = tmp_path / "exported"
    subprocess.run(
        [
            sys.executable,
            str(pod_harness.REPO / "launch" / "export.py"),
            f"--model={pod}",
            f"--output={exported}",
        ],
        check=True,
        capture_output=True,
        cwd=pod_harness.REPO,
    )
    np.testing.assert_allclose(Encoder.load(str(exported)).encode(PROBE), expected, atol=1e-5)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> pathlib.Path:
    """The fault tests' run without faults, as one process of 4 devices."""
    root = tmp_path_factory.mktemp("uninterrupted")
    pod_harness.train([*FAULT_RUN, f"--workdir={root / 'run'}"], root / "logs", 1, 4)
    return root / "run"


def _saved_steps(workdir: pathlib.Path) -> list[int]:
    return sorted(checkpoint_io.finished_steps(str(workdir)))


def test_sigterm_to_one_host_stops_every_host_at_one_step(tmp_path, uninterrupted):
    workdir = tmp_path / "run"
    with pod_harness.TrainJob([*FAULT_RUN, f"--workdir={workdir}"], tmp_path / "logs") as job:
        job.wait_for_output(0, r"^step 3/", timeout=300)  # Only process 0 logs steps.
        job.send_signal(1, signal.SIGTERM)
        start = time.monotonic()
        statuses = job.wait(timeout=120)
        seconds = time.monotonic() - start
    assert statuses == [143, 143], job.outputs()  # Preempted, not finished.
    assert seconds < 60, seconds
    stopped = [re.search(r"Stopped at step (\d+) after SIGTERM", job.output(i)) for i in range(2)]
    assert all(stopped), job.outputs()
    step = int(stopped[0].group(1))
    assert int(stopped[1].group(1)) == step < FAULT_STEPS
    assert _saved_steps(workdir)[-1] == step

    job = pod_harness.train([*FAULT_RUN, f"--workdir={workdir}"], tmp_path / "logs_rerun")
    assert f"Resuming from checkpoint step {step}" in job.output(0)
    assert _max_abs_diff(workdir, uninterrupted) <= 1e-5


def test_kill_every_process_then_one_process_then_rerun(tmp_path, uninterrupted):
    workdir = tmp_path / "run"
    command = [*FAULT_RUN, f"--workdir={workdir}"]
    # kill -9 of every process, as when a whole slice is lost.
    with pod_harness.TrainJob(command, tmp_path / "logs_killed") as job:
        job.wait_for_output(0, r"^step 5/", timeout=300)  # Only process 0 logs steps.
        job.kill()
    assert _saved_steps(workdir) and _saved_steps(workdir)[-1] < 5

    # The same command resumes; then one process dies, and the other stops by itself.
    with pod_harness.TrainJob(command, tmp_path / "logs_resumed") as job:
        job.wait_for_output(0, r"^step 9/", timeout=300)
        job.send_signal(1, signal.SIGKILL)
        start = time.monotonic()
        statuses = job.wait(timeout=120)
        seconds = time.monotonic() - start
    assert "Resuming from checkpoint step" in job.output(0)
    assert statuses == [3, -signal.SIGKILL], job.outputs()
    assert seconds < 60, seconds
    errors = [line for line in job.output(0).splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "another process of this job stopped" in errors[0], job.outputs()
    assert "Traceback" not in job.output(0)
    last = _saved_steps(workdir)[-1]
    assert f"resume from checkpoint step {last}" in errors[0]

    job = pod_harness.train(command, tmp_path / "logs_rerun")
    assert f"Resuming from checkpoint step {last}" in job.output(0)
    assert _max_abs_diff(workdir, uninterrupted) <= 1e-5
