"""Every model revisit can run, by task and name: the one place where a name in the
settings becomes a class (an explicit table, not registration on import)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from revisit.vision.detect import YuNetDetector
from revisit.vision.embed import (
    ArcFaceEmbedder,
    Embedder,
    Reid0095Embedder,
    SFaceEmbedder,
    SFaceReidEmbedder,
)
from revisit.vision.model import InferenceModel, Task

if TYPE_CHECKING:
    from revisit.config import Settings

log = logging.getLogger(__name__)

MODELS: dict[tuple[str, str], type[InferenceModel]] = {
    ("detector", "yunet"): YuNetDetector,
    ("embedder", "sface"): SFaceEmbedder,
    ("embedder", "sface-reid"): SFaceReidEmbedder,
    ("embedder", "reid0095"): Reid0095Embedder,
    ("embedder", "arcface"): ArcFaceEmbedder,
}


def available(task: Task) -> list[str]:
    return sorted(name for (t, name) in MODELS if t == task)


def model_class(task: Task, name: str) -> type[InferenceModel]:
    try:
        return MODELS[(task, name)]
    except KeyError:
        raise ValueError(
            f"unknown {task} {name!r}; available: {', '.join(available(task))}"
        ) from None


def embedder_facts(name: str) -> type[Embedder]:
    """The embedder class for ``name``: its dim, thresholds and face-check bars (class
    attributes, readable without loading weights)."""
    cls = model_class("embedder", name)
    assert issubclass(cls, Embedder)
    return cls


def match_threshold(settings: Settings) -> float:
    """``identity.match_threshold`` if set, else the chosen embedder's measured default:
    the one bar the resolver, its tracks and consolidation all start from."""
    configured = settings.identity.match_threshold
    return (configured if configured is not None
            else embedder_facts(settings.embedder.model).match_threshold)


def create(task: Task, name: str, **kwargs: Any) -> InferenceModel:
    """Build (not load) the model for (task, name)."""
    cls = model_class(task, name)
    if not cls.commercial_use_ok:
        log.warning("%s %s selected: %s", task, name, cls.licence)
    return cls(**kwargs)
