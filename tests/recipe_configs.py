"""Loads recipe configs from `configs/` the way `--config=configs/NAME.py:ARG` does."""

import importlib.util
import pathlib

import ml_collections

CONFIGS = pathlib.Path(__file__).resolve().parents[1] / "configs"


def get_config(name: str, arg: str = "") -> ml_collections.ConfigDict:
    """Returns `configs/{name}.py`'s `get_config(arg)`."""
    spec = importlib.util.spec_from_file_location(f"recipe_{name}", CONFIGS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)
