"""Model soups: averaged parameters, checks on the inputs, and a soup that
loads and evaluates like any workdir."""

import importlib.util
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from absl.testing import flagsaver

from gecko_jax import checkpoint_io
from gecko_jax.encoder import Encoder
from gecko_jax.errors import UserError
from gecko_jax.evaluation import sts
from gecko_jax.training.soup import SOUP_FILE, SoupInput, make_soup, parse_inputs, parse_weights
from workdir_helpers import make_workdir, random_params, tiny_bert_config  # pylint: disable=g-bad-import-order

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _assert_trees_close(a, b, **tolerance):
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, **tolerance), a, b)


@pytest.fixture(name="runs", scope="module")
def fixture_runs(tmp_path_factory):
    """Two runs of one tiny tower: 'a' with steps 1 and 2, 'b' with step 5.

    Shared by the module's tests, which only read them and write elsewhere.
    """
    root = tmp_path_factory.mktemp("runs")
    config = tiny_bert_config(projection_dim=8)
    params = {name: random_params(config, seed) for name, seed in (("a1", 0), ("a2", 1), ("b5", 2))}
    make_workdir(root / "a", config, {1: params["a1"], 2: params["a2"]})
    other = tiny_bert_config(projection_dim=8, init="st:/elsewhere")
    make_workdir(root / "b", other, {5: params["b5"]})
    return root, params


def _soup_params(folder):
    _, step, params = checkpoint_io.restore_step_params(str(folder))
    return step, params


def test_soup_of_a_run_with_itself_is_the_run(runs, tmp_path):
    root, params = runs
    make_soup([SoupInput(str(root / "a"))] * 2, None, str(tmp_path / "soup"))
    step, soup = _soup_params(tmp_path / "soup")
    assert step == 2
    _assert_trees_close(soup, params["a2"], rtol=0, atol=0)


def test_uniform_and_weighted_soups_average_the_trees(runs, tmp_path):
    root, params = runs
    inputs = parse_inputs(f"{root / 'a'}@1,{root / 'b'}")
    record = make_soup(inputs, None, str(tmp_path / "uniform"))
    assert [e["step"] for e in record["inputs"]] == [1, 5]
    step, soup = _soup_params(tmp_path / "uniform")
    assert step == 5
    _assert_trees_close(
        soup, jax.tree.map(lambda x, y: (x + y) / 2, params["a1"], params["b5"]), rtol=1e-6, atol=1e-7
    )
    make_soup(inputs, parse_weights("1,3", 2), str(tmp_path / "weighted"))
    _, soup = _soup_params(tmp_path / "weighted")
    _assert_trees_close(
        soup, jax.tree.map(lambda x, y: x / 4 + 3 * y / 4, params["a1"], params["b5"]), rtol=1e-6, atol=1e-7
    )
    written = json.loads((tmp_path / "weighted" / SOUP_FILE).read_text())
    assert [e["weight"] for e in written["inputs"]] == [0.25, 0.75]


def _launch_main(name):
    """The `main` of launch/NAME.py, imported: a subprocess would start JAX."""
    spec = importlib.util.spec_from_file_location(
        f"launch_{name}", os.path.join(REPO, "launch", f"{name}.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_cli_soup_equals_make_soup_and_evaluates(runs, tmp_path, capsys):
    root, _ = runs
    inputs, weights = f"{root / 'a'}@1,{root / 'b'}", "1,3"
    main = _launch_main("soup")  # Defines the flags that as_parsed sets.
    with flagsaver.as_parsed(inputs=inputs, weights=weights, output=str(tmp_path / "cli")):
        main(["soup.py"])
    out, err = capsys.readouterr()
    record = make_soup(parse_inputs(inputs), parse_weights(weights, 2), str(tmp_path / "lib"))
    assert json.loads(out) == record
    assert "soup: writing" in err
    step, soup = _soup_params(tmp_path / "cli")
    expected_step, expected = _soup_params(tmp_path / "lib")
    assert step == expected_step
    _assert_trees_close(soup, expected, rtol=0, atol=0)
    assert (
        checkpoint_io.read_config(str(tmp_path / "cli")).to_dict()
        == checkpoint_io.read_config(str(tmp_path / "lib")).to_dict()
    )
    # The soup loads and evaluates as any workdir does.
    encoder = Encoder.load(str(tmp_path / "cli"), batch_size=4)
    _assert_trees_close(encoder.params, soup, rtol=0, atol=0)
    data = tmp_path / "sts.csv"
    data.write_text(
        "".join(
            f"g\tf\t2012\t{i}\t{score}\t{first}\t{second}\n"
            for i, (score, first, second) in enumerate(
                [
                    (5.0, "A man is dancing.", "A man dances."),
                    (0.5, "A cat sleeps.", "Stocks fell today."),
                    (3.0, "A child rides a horse.", "A child is on a pony."),
                    (1.0, "The sun is hot.", "Bread needs flour."),
                    (4.0, "Two dogs run.", "Two dogs are running fast."),
                ]
            )
        ),
        encoding="utf-8",
    )
    scores = sts.score_sts(encoder, sts.load_sts(str(data)))
    assert scores["num_pairs"] == 5
    assert -1 <= scores["spearman"] <= 1


def test_inputs_that_differ_are_refused(runs, tmp_path):
    root, _ = runs
    wide = tiny_bert_config(projection_dim=16)
    make_workdir(tmp_path / "wide", wide, {1: random_params(wide)})
    with pytest.raises(UserError, match="model.projection_dim=16"):
        make_soup(parse_inputs(f"{root / 'a'},{tmp_path / 'wide'}"), None, str(tmp_path / "out"))
    with pytest.raises(UserError, match="no checkpoint at step 3"):
        make_soup(parse_inputs(f"{root / 'a'}@3"), None, str(tmp_path / "out"))
    assert not os.path.exists(tmp_path / "out")
    assert not [p for p in os.listdir(tmp_path) if "partial" in p]


@pytest.mark.parametrize(
    "inputs,weights,match",
    [
        ("a,,b", None, "is not WORKDIR"),
        ("a@x", None, "is not WORKDIR"),
        ("a,b", "1", "2 inputs"),
        ("a,b", "1,-1", "non-negative"),
        ("a,b", "1,x", "numbers"),
    ],
)
def test_bad_arguments(inputs, weights, match):
    with pytest.raises(UserError, match=match):
        parse_weights(weights, len(parse_inputs(inputs))) if weights else (parse_inputs(inputs))


def test_cli_error_is_one_line():
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "launch", "soup.py"), "--inputs=a"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == "error: --output is required"
