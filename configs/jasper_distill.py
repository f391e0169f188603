r"""Jasper/Stella distillation (arXiv 2412.19048): a student learns its teachers' vector space.

The student (all-MiniLM-L6-v2, mean pooled) gets FC1, a dense head to the
teachers' total width, and is trained with Jasper's three losses (cosine,
similarity-matrix MSE, relative-similarity hinge; weights 10/200/20, margin
0.015) against the teachers' vectors of the same text, in three stages:

  stage1  trains FC1 only (optimizer.trainable = projection);
  stage2  trains FC1 and the last 3 encoder layers, starting from stage 1;
  stage3  trains everything, starting from stage 2, with Matryoshka prefixes
          (the released code's variant of stage 3: L_sim and L_resim averaged
          over the prefixes, L_cosine on the full vector).

The argument picks the stage: `:stage1` (also `` and the default),
`:stage2`, `:stage3`; `_runlocal` shrinks any of them to a tiny random student
on the bundled 64-pair set that trains 3 steps on a CPU (`:runlocal` is
`:stage1_runlocal`). The teachers are MiniLM (384-d) and Gemma 3 270M (640-d,
mean pooled), so FC1 maps to 1024; the paper's NV-Embed-v2 + stella (12288-d)
cannot be imported here. Any teachers work: pass store folders written by
data_pipelines/teacher_vectors.py or Encoder specs with
`--config.data.teachers="('A','B')"` and set `--config.model.projection_dim`
to their total width. A spec is embedded once into WORKDIR/teachers/.

    python launch/train.py --config=configs/jasper_distill.py:stage1 --workdir=runs/jasper_stage1
    python launch/train.py --config=configs/jasper_distill.py:stage2 --workdir=runs/jasper_stage2
    python launch/train.py --config=configs/jasper_distill.py:stage3 --workdir=runs/jasper_stage3

Stages 2 and 3 read the previous stage's workdir through `model.init` (a
workdir loads its newest checkpoint) and its teacher stores; these defaults
are the workdirs above, relative to the current directory, and
`--config.model.init=DIR` / `--config.data.teachers=...` point elsewhere.
The runlocal stages start from scratch unless given `--config.model.init`:

    python launch/train.py --config=configs/jasper_distill.py:runlocal --workdir=runs/jr1
    python launch/train.py --config=configs/jasper_distill.py:stage2_runlocal --workdir=runs/jr2 \
        --config.model.init=runs/jr1
"""

from gecko_jax.config_base import base_config, bundled_data_dir, evaluator

# Batch, learning rate and checkpoint step of each stage, as the paper trained them.
_SCHEDULES = {1: (128, 1e-4, 4000), 2: (128, 8e-5, 7000), 3: (128, 7e-5, 2200)}
_TEACHERS = ("minilm", "gemma3-270m")
_TEACHER_WIDTH = 384 + 640
_STAGE3_DIMS = (1024, 512, 256)


def _parse(arg: str) -> tuple[int, bool]:
    """'stage2_runlocal' -> (2, True); '' and 'runlocal' are stage 1."""
    stage, _, rest = (arg or "stage1").partition("_")
    if stage == "runlocal" and not rest:
        return 1, True
    if stage not in ("stage1", "stage2", "stage3") or rest not in ("", "runlocal"):
        raise ValueError(
            f"unknown config argument {arg!r}; use stage1|stage2|stage3, optionally "
            "with _runlocal, or runlocal"
        )
    return int(stage[-1]), rest == "runlocal"


def _last_layers(num_layers: int, count: int = 3) -> str:
    """Regex over the parameter paths of the last `count` encoder layers."""
    indices = "|".join(str(i) for i in range(num_layers - count, num_layers))
    return f"backbone/layer_({indices})/"


def get_config(arg: str = ""):
    """Returns the recipe for the stage named by `arg` (see the module docstring)."""
    stage, runlocal = _parse(arg)
    c = base_config()
    batch_size, learning_rate, steps = _SCHEDULES[stage]
    c.total_steps = steps
    c.batch_size = batch_size
    c.log_every = 50
    c.checkpoint_every = 1000

    c.model.init = "minilm" if stage == 1 else f"runs/jasper_stage{stage - 1}"
    c.model.projection_dim = _TEACHER_WIDTH  # FC1.
    c.model.dropout_rate = 0.0
    c.model.attention_dropout_rate = 0.0

    c.data.data_dir = bundled_data_dir(__file__)
    c.data.mixture = ("squad", "snli")
    c.data.format = "plain"  # Student and teachers embed the same raw text.
    c.data.max_length = 64
    c.data.teachers = (
        _TEACHERS if stage == 1 else tuple(f"runs/jasper_stage1/teachers/{t}" for t in _TEACHERS)
    )

    c.loss.name = "jasper_distill"
    c.loss.mrl_dims = _STAGE3_DIMS if stage == 3 else ()

    c.optimizer.learning_rate = learning_rate
    c.optimizer.warmup_steps = int(0.05 * steps)  # The released code's example config.
    c.optimizer.trainable = {1: ("projection/",), 2: ("projection/", _last_layers(6)), 3: ()}[stage]

    # STS-B dev Spearman (`evals.sts.spearman`, and `@512`, `@256` in stage 3); the
    # runlocal variants train on the tiny set and skip it.
    if not runlocal:
        c.evals.sts = evaluator("sts", "stsb/sts-dev.csv", dims=_STAGE3_DIMS[1:] if stage == 3 else ())

    if runlocal:
        c.total_steps = 3
        c.batch_size = 8
        c.log_every = 1
        c.checkpoint_every = 0
        c.model.init = ""
        c.model.update(hidden_size=64, num_layers=4, num_heads=4, intermediate_size=128, projection_dim=384)
        c.data.mixture = ("tiny",)
        c.data.max_length = 32
        c.data.teachers = ("minilm",)
        c.loss.mrl_dims = (384, 128) if stage == 3 else ()
        c.optimizer.learning_rate = 1e-3
        c.optimizer.warmup_steps = 1
        c.optimizer.trainable = {1: ("projection/",), 2: ("projection/", _last_layers(4)), 3: ()}[stage]
    return c
