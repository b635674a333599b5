"""Shared fixtures: a small corpus slice and a tokenizer cache shared by every test of a session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from tests.helpers import CONF, TINY_DATA


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cache")
    os.environ["SCALING_CACHE"] = str(path)  # subprocesses (CLI tests) share the session's cache
    return path


@pytest.fixture
def make_cfg(cache_dir: Path):
    """Compose conf/run.yaml with overrides, as `python -m scaling.train` would."""

    def make(*overrides: str) -> DictConfig:
        with initialize_config_dir(config_dir=CONF, version_base=None):
            return compose(
                "run", overrides=[*TINY_DATA, f"data.cache_dir={cache_dir}", "train.progress=false", *overrides]
            )

    return make
