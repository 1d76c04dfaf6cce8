"""Vision stage: decode, detect, quality-gate, align and embed faces.

Public API (what the pipeline calls)::

    from revisit.vision import Vision, decode, detect_batch, embed_batch
    vision = Vision(settings)            # models load lazily on first use
    batch = vision.detect(batch)         # == detect_batch(batch, vision.detector, settings)
    batch = vision.embed(batch)          # == embed_batch(batch, vision.embedder, settings)
    vision.match_threshold               # identity.match_threshold or the measured default
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# where each public name lives; imported on first use, so that a module of this package
# that needs no model (``vision.header``: an image's format and size, read by the upload
# path) does not load OpenCV and the model runtimes with it
_WHERE = {
    "available": "catalog", "create": "catalog", "embedder_facts": "catalog",
    "Detection": "detect", "Detector": "detect", "Embedder": "embed",
    "InferenceModel": "model", "ModelNotAvailable": "model",
    "Vision": "stages", "decode": "stages", "detect_batch": "stages",
    "embed_batch": "stages",
}

if TYPE_CHECKING:
    from revisit.vision.catalog import available, create, embedder_facts
    from revisit.vision.detect import Detection, Detector
    from revisit.vision.embed import Embedder
    from revisit.vision.model import InferenceModel, ModelNotAvailable
    from revisit.vision.stages import Vision, decode, detect_batch, embed_batch


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'revisit.vision' has no attribute {name!r}")
    return getattr(importlib.import_module(f"revisit.vision.{_WHERE[name]}"), name)


__all__ = [
    "Detection",
    "Detector",
    "Embedder",
    "InferenceModel",
    "ModelNotAvailable",
    "Vision",
    "available",
    "create",
    "decode",
    "detect_batch",
    "embed_batch",
    "embedder_facts",
]
