"""Shared fixtures: offline mode, the tiny encoder, and small test images written on demand."""

from __future__ import annotations

import os

# Before anything imports huggingface_hub / transformers: never reach for a model hub in tests.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import logging  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from helpers import write_images  # noqa: E402


@pytest.fixture(autouse=True)
def _restore_logging():
    """The CLI reconfigures the root logger for its run; give every other test its own back."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture(scope="session")
def tiny_encoder():
    """The tiny random open_clip encoder of ``configs/models/tiny-test.yaml`` (seed 0), loaded once."""
    from viewfinder.adapters.registry import load_encoder

    return load_encoder("tiny-test")


@pytest.fixture(scope="session")
def other_encoder():
    """The same tiny architecture with another seed: a different fingerprint."""
    from viewfinder.adapters.registry import load_encoder

    return load_encoder({"name": "tiny-other", "arch": "tiny-test", "weights": "random", "seed": 1})


@pytest.fixture
def make_images(tmp_path: Path) -> Callable[..., list[Path]]:
    """Factory: ``make_images(n, folder=None, seed=0, prefix="img")`` writes ``n`` small PNG/JPEG
    files of random colours and varying sizes (default folder: ``tmp_path / "images"``)."""

    def factory(n: int, folder: Path | None = None, seed: int = 0, prefix: str = "img") -> list[Path]:
        return write_images(folder or tmp_path / "images", n, seed=seed, prefix=prefix)

    return factory


@pytest.fixture(scope="session")
def local_ray():
    """One local Ray (2 CPUs) for every test that uses the ray engine (starting one costs seconds)."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()
