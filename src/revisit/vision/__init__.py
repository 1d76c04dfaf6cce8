"""Vision stage: decode, detect, quality-gate, align and embed faces.

Public API (what the pipeline calls)::

    from revisit.vision import Vision, decode, detect_batch, embed_batch
    vision = Vision(settings)            # models load lazily on first use
    batch = vision.detect(batch)         # == detect_batch(batch, vision.detector, settings)
    batch = vision.embed(batch)          # == embed_batch(batch, vision.embedder, settings)
    vision.match_threshold               # identity.match_threshold or the measured default
"""

from revisit.vision.catalog import available, create, embedder_facts
from revisit.vision.detect import Detection, Detector
from revisit.vision.embed import Embedder
from revisit.vision.model import InferenceModel, ModelNotAvailable
from revisit.vision.stages import Vision, decode, detect_batch, embed_batch

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
