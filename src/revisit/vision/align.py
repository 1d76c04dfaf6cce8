"""5-point face alignment to a 112x112 crop.

Both embedders were trained on crops aligned with the standard ArcFace 5-point
template, so one least-squares similarity transform (rotation, uniform scale,
translation; Umeyama's closed form, the same estimate OpenCV's
``FaceRecognizerSF.alignCrop`` computes) serves both. Measured on lfw-dev pairs, SFace
scores from these crops match ``alignCrop``'s (see docs/accuracy.md).
"""

from __future__ import annotations

import cv2
import numpy as np

CROP_SIZE = 112

# Landmark order: right eye, left eye, nose tip, mouth right, mouth left (the subject's
# right eye appears on the image's left), as YuNet emits them.
ARCFACE_TEMPLATE = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float32,
)


def similarity_transform(src: np.ndarray, dst: np.ndarray = ARCFACE_TEMPLATE) -> np.ndarray:
    """Least-squares similarity (2x3) mapping ``src`` points onto ``dst`` (Umeyama 1991).

    Closed form and deterministic: RANSAC (``cv2.estimateAffinePartial2D``'s default)
    may discard one of only five points and gives a slightly different crop each time
    its threshold is crossed.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    n = src.shape[0]
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s_c, d_c = src - mu_s, dst - mu_d
    cov = d_c.T @ s_c / n
    u, sig, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[-1] = -1
    rot = u @ np.diag(d) @ vt
    var_s = (s_c**2).sum() / n
    scale = (sig * d).sum() / var_s if var_s > 0 else 1.0
    m = np.empty((2, 3), dtype=np.float64)
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - scale * rot @ mu_s
    return m


def align_crop(image: np.ndarray, landmarks: np.ndarray, size: int = CROP_SIZE) -> np.ndarray:
    """The ``size`` x ``size`` face crop (same channel order as ``image``)."""
    template = ARCFACE_TEMPLATE * (size / CROP_SIZE)
    m = similarity_transform(landmarks, template)
    return cv2.warpAffine(image, m, (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)
