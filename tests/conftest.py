"""Shared fixtures: a tiny model and a small EdgeScenes data set, built once per test session."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session", autouse=True)
def calibration_cache(tmp_path_factory):
    """Runtime calibrations go to a folder of this test session, not the user's cache."""
    import os

    folder = tmp_path_factory.mktemp("cache")
    saved = os.environ.get("EDGELMM_CACHE_DIR")
    os.environ["EDGELMM_CACHE_DIR"] = str(folder)
    yield folder
    if saved is None:
        os.environ.pop("EDGELMM_CACHE_DIR", None)
    else:
        os.environ["EDGELMM_CACHE_DIR"] = saved


@pytest.fixture(scope="session")
def tiny():
    from edgelmm.modeling import build_model

    return build_model("tiny")


@pytest.fixture(scope="session")
def scenes_dir(tmp_path_factory):
    from edgelmm.data.edgescenes import synthesize

    return synthesize(tmp_path_factory.mktemp("es") / "seed0", 120, seed=0, workers=2, progress=False)


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory):
    """A saved tiny checkpoint with random weights (seed 0), for export and runtime tests."""
    import torch

    from edgelmm.modeling import build_model, save_checkpoint

    torch.manual_seed(0)
    return save_checkpoint(build_model("tiny"), tmp_path_factory.mktemp("ckpt") / "tiny")
