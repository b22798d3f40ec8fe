"""Shared fixtures: a tiny prepared dataset and composed training configs."""

import os
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

if not torch.cuda.is_available():  # before triton is imported: its kernels run interpreted
    os.environ.setdefault("TRITON_INTERPRET", "1")

import samplernn.schema  # noqa: F401,E402  (registers the config schemas, as the commands do)

CONFIGS = Path(__file__).resolve().parents[1] / "configs"

torch.set_num_threads(1)  # tiny models: threads only add contention on a 2-core machine


def pytest_collection_modifyitems(config, items):
    """The slow layer (real processes, signals, Triton's interpreter: seconds to a minute
    each) runs with SAMPLERNN_SLOW=1, as CI does; `make test` alone is the fast layer."""
    if os.environ.get("SAMPLERNN_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow layer: set SAMPLERNN_SLOW=1 (CI sets it)")
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if "slow" in item.keywords or params.get("backend") == "triton":  # the interpreter
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """8 synthetic pieces of 1.5 s at 16 kHz, prepared through the same path as user data."""
    from samplernn.prepare import prepare
    from samplernn.synth import synthesize
    root = tmp_path_factory.mktemp("tiny_data")
    synthesize(root / "source", n_files=8, seconds=1.5, seed=3)
    prepare(root / "source", root / "prepared", valid_fraction=0.25, test_fraction=0.25,
            num_workers=0)
    return root / "prepared"


def compose_train(*overrides: str):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides))


@pytest.fixture
def train_cfg(tiny_dataset):
    """A composed debug config on the tiny dataset; call with extra overrides."""
    def make(*overrides: str):
        return compose_train("debug=tiny", "logger=none", f"dataset.path={tiny_dataset}",
                             "dataset.builtin=false", "dataset.num_workers=0", *overrides)
    return make
