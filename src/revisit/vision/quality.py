"""Quality gate: which faces may found a visitor, which may only match, which are dropped.

A face that creates a visitor becomes that visitor's first exemplar; a blurred or tiny
face founds a visitor that nobody will ever match again, inflating the unique count. So
the bar to create is higher than the bar to match.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from revisit.config import QualitySettings

# Faces this tall (px) or taller count as fully sized; a crop this sharp as fully sharp.
_FULL_HEIGHT = 100.0
_FULL_SHARPNESS_FACTOR = 5.0


@dataclass(frozen=True, slots=True)
class QualityVerdict:
    quality: float  # 0..1
    creatable: bool
    keep: bool  # False: too small even to match; the face is dropped
    sharpness: float
    reason: str = ""  # why not creatable / not kept


def sharpness(crop: np.ndarray) -> float:
    """Variance of the Laplacian of the aligned crop: low for blurred or upscaled faces.

    Measured on the aligned crop, not the frame, so it is comparable across face sizes: a
    30 px face upscaled to 112 px is blurry by construction.
    """
    gray = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY) if crop.ndim == 3 else crop
    return float(cv2.Laplacian(gray, cv2.CV_64F).var())


def assess(face_height: int, det_score: float, crop: np.ndarray | None,
           settings: QualitySettings) -> QualityVerdict:
    """Score one face. ``crop`` may be None when the face is already too small to keep."""
    if face_height < settings.min_match_height:
        return QualityVerdict(0.0, False, False, 0.0,
                              f"face height {face_height} < min_match_height")
    sharp = sharpness(crop) if crop is not None else 0.0
    lo = float(settings.min_match_height)
    size_term = float(np.clip((face_height - lo) / max(_FULL_HEIGHT - lo, 1.0), 0.0, 1.0))
    full_sharp = max(settings.min_sharpness * _FULL_SHARPNESS_FACTOR, 1.0)
    sharp_term = float(np.clip(sharp / full_sharp, 0.0, 1.0))
    score_term = float(np.clip(det_score, 0.0, 1.0))
    quality = round(0.4 * size_term + 0.3 * score_term + 0.3 * sharp_term, 4)

    reasons = []
    if face_height < settings.min_face_height:
        reasons.append(f"face height {face_height} < {settings.min_face_height}")
    if det_score < settings.min_det_score:
        reasons.append(f"detector score {det_score:.2f} < {settings.min_det_score}")
    if sharp < settings.min_sharpness:
        reasons.append(f"sharpness {sharp:.1f} < {settings.min_sharpness}")
    return QualityVerdict(quality, not reasons, True, sharp, "; ".join(reasons))
