"""Golden sharding tests: each parameter's PartitionSpec per recipe, preset and mesh.

For `configs/gecko_768.py` and `configs/gecko_270m.py`, every sharding preset
and the meshes (data, fsdp, tensor) = (8,1,1), (2,4,1) and (2,2,2), the
parameter shapes and PartitionSpecs the trainer would use are compared with
`tests/golden/<recipe>.<preset>.<mesh>.json`. Everything is abstract
(`jax.eval_shape`): no weights are initialised, downloaded or imported.

A deliberate change to a recipe, a model or the sharding rules changes the
goldens; regenerate them, then review the diff of tests/golden/ like code:

    GECKO_UPDATE_GOLDENS=1 .venv/bin/pytest tests/sharding_golden_test.py
"""

import functools
import importlib.util
import json
import os
import pathlib

import jax
import pytest
from flax import linen as nn

from gecko_jax.errors import UserError
from gecko_jax.models.registry import build_tower
from gecko_jax.training import sharding
from gecko_jax.training.optimizers import make_optimizer
from gecko_jax.training.train_program import build_train_program
from gecko_jax.training.train_step import init_train_state, param_shapes, state_shardings

REPO = pathlib.Path(__file__).resolve().parents[1]
GOLDEN_DIR = REPO / "tests" / "golden"
RECIPES = ("gecko_768", "gecko_270m")
MESHES = ((8, 1, 1), (2, 4, 1), (2, 2, 2))
UPDATE = os.environ.get("GECKO_UPDATE_GOLDENS") == "1"


def _recipe(name: str, arg: str = ""):
    path = REPO / "configs" / f"{name}.py"
    if not path.exists():
        pytest.skip(f"{path} does not exist yet")
    spec = importlib.util.spec_from_file_location(f"golden_recipe_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


@functools.lru_cache(maxsize=None)
def _abstract_state(recipe: str):
    """(optimizer, boxed abstract TrainState) of a recipe, as `build_train_program` makes them.

    Tracing a ~1B model takes seconds; the presets and meshes share one trace.
    """
    config = _recipe(recipe)
    model = build_tower(config.model)
    tx, _ = make_optimizer(config.optimizer, config.total_steps, param_shapes(model, config.data.max_length))
    init = functools.partial(init_train_state, model, tx, max_length=config.data.max_length)
    return tx, jax.eval_shape(init, jax.random.key(0))


def _spec_to_json(spec) -> list:
    return [list(axes) if isinstance(axes, tuple) else axes for axes in spec]


def param_layout(recipe: str, preset: str, mesh_dims: tuple[int, int, int]) -> dict[str, dict]:
    """Parameter path -> {"shape", "spec"} as the trainer would shard it."""
    mesh_shape = dict(zip(sharding.MESH_AXES, mesh_dims))
    sharding.check_preset_uses_mesh(preset, mesh_shape)
    mesh = sharding.create_mesh(mesh_shape, jax.devices()[:8])
    tx, abstract = _abstract_state(recipe)
    shardings = state_shardings(abstract, tx, mesh, sharding.preset_rules(preset))
    shapes = jax.tree_util.tree_flatten_with_path(nn.unbox(abstract.params))[0]
    specs = jax.tree.leaves(shardings.params)
    return {
        jax.tree_util.keystr(path, simple=True, separator="/"): {
            "shape": list(leaf.shape),
            "spec": _spec_to_json(named.spec),
        }
        for (path, leaf), named in zip(shapes, specs)
    }


def _cases():
    for recipe in RECIPES:
        for preset in sorted(sharding.SHARDING_PRESETS):
            for dims in MESHES:
                yield pytest.param(recipe, preset, dims, id=f"{recipe}-{preset}-{'x'.join(map(str, dims))}")


@pytest.mark.parametrize("recipe,preset,dims", list(_cases()))
def test_param_specs_match_golden(recipe, preset, dims):
    golden = GOLDEN_DIR / f"{recipe}.{preset}.{'x'.join(map(str, dims))}.json"
    try:
        sharding.check_preset_uses_mesh(preset, dict(zip(sharding.MESH_AXES, dims)))
    except UserError:
        assert not golden.exists(), f"{golden} is stale: this preset refuses this mesh"
        return
    layout = param_layout(recipe, preset, dims)
    if UPDATE:
        GOLDEN_DIR.mkdir(exist_ok=True)
        lines = (f" {json.dumps(path)}: {json.dumps(layout[path])}" for path in sorted(layout))
        golden.write_text("{\n" + ",\n".join(lines) + "\n}\n")
    assert golden.exists(), (
        f"no golden {golden.name}; create it with GECKO_UPDATE_GOLDENS=1 pytest tests/sharding_golden_test.py"
    )
    expected = json.loads(golden.read_text())
    assert sorted(layout) == sorted(expected), "parameter set changed: regenerate and review"
    changed = {path: (expected[path], layout[path]) for path in layout if layout[path] != expected[path]}
    assert not changed, f"{len(changed)} parameters changed (golden, now): {changed}"


def test_presets_differ_where_they_should():
    dp = param_layout("gecko_768", "dp", (2, 4, 1))
    assert all(entry is None for item in dp.values() for entry in item["spec"])
    fsdp = param_layout("gecko_768", "fsdp", (2, 4, 1))
    assert all("tensor" not in json.dumps(item["spec"]) for item in fsdp.values())
    assert sum("fsdp" in item["spec"] for item in fsdp.values()) > len(fsdp) // 2
    fsdp_tp = param_layout("gecko_768", "fsdp_tp", (2, 2, 2))
    assert any("tensor" in item["spec"] for item in fsdp_tp.values())


def test_trainer_program_uses_the_configured_preset():
    config = _recipe("gecko_768", "runlocal")
    config.sharding = "dp"
    mesh = sharding.create_mesh({"data": 2, "fsdp": 4}, jax.devices()[:8])
    program = build_train_program(config, mesh)
    assert program.rules == sharding.SHARDING_PRESETS["dp"]
    assert all(
        s.spec == jax.sharding.PartitionSpec(*[None] * len(s.spec))
        for s in jax.tree.leaves(program.shardings.params)
    )


def test_bad_presets_are_clear_errors():
    config = _recipe("gecko_768")
    mesh = sharding.create_mesh({"data": 2, "fsdp": 2, "tensor": 2}, jax.devices()[:8])
    config.sharding = "zero3"
    with pytest.raises(UserError, match="unknown sharding preset 'zero3'"):
        build_train_program(config, mesh)
    config.sharding = "fsdp"
    with pytest.raises(UserError, match="does not use the mesh axis 'tensor'"):
        build_train_program(config, mesh)
