"""Quality gate: which faces may found a visitor, which may match one, which only follow
their track, which are dropped.

A face that creates a visitor becomes that visitor's first exemplar; a blurred, tiny or
turned face founds a visitor that nobody will ever match again, inflating the unique
count. So each use needs more than the one before it (rules and the real-footage
measurements behind them: docs/accuracy.md "Face quality"):

- **dropped**: too small to follow (``min_track_height``), or landmarks that fit no face
  (the back of a head, an object): never a sighting. Each drop carries a reason code.
- **track-only**: small (< ``min_match_height``), turned past ``max_match_yaw``, or a weak
  face check: a sighting only through its track, when the track's visitor is known; its
  embedding takes no part in deciding who that is.
- **matchable**: its embedding counts in its track's pooled embedding.
- **creatable**: matchable, and large, sharp, frontal and confident enough to found a
  visitor on its own.

The embedding-space check (how face-like the embedder finds the crop) runs after
embedding, in :func:`revisit.vision.stages.embed_batch`, with the embedder's own bars.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from revisit.config import QualitySettings
from revisit.records import NOT_A_FACE, TOO_SMALL
from revisit.vision.pose import Pose, head_pose, landmark_residual

# Faces this tall (px) or taller count as fully sized in the quality score.
_FULL_HEIGHT = 100.0



def face_check(faceness: float | None, floor: float, match: float) -> str:
    """The embedder's verdict on a crop from its raw embedding norm (``faceness``):
    ``"drop"`` (no face), ``"track"`` (too weak a face to match) or ``"ok"``."""
    if faceness is None:
        return "ok"
    return "drop" if faceness < floor else "track" if faceness < match else "ok"


@dataclass(frozen=True, slots=True)
class QualityVerdict:
    quality: float  # 0..1
    creatable: bool
    matchable: bool
    keep: bool  # False: dropped, see ``drop``
    sharpness: float
    pose: Pose
    drop: str = ""  # reason code when not kept
    reason: str = ""  # why not creatable / not matchable / dropped, in words


def sharpness(crop: np.ndarray) -> float:
    """Variance of the Laplacian of the aligned crop: low for blurred or upscaled faces.

    Measured on the aligned crop, not the frame, so it is comparable across face sizes: a
    30 px face upscaled to 112 px is blurry by construction.
    """
    gray = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY) if crop.ndim == 3 else crop
    return float(cv2.Laplacian(gray, cv2.CV_64F).var())


def contrast(crop: np.ndarray) -> float:
    """Grey-level standard deviation of the aligned crop: a face seen in glass is washed out
    next to the person it reflects."""
    gray = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY) if crop.ndim == 3 else crop
    return float(gray.std())


def assess(face_height: int, det_score: float, crop: np.ndarray | None,
           settings: QualitySettings, landmarks: np.ndarray | None = None,
           sharp: float | None = None) -> QualityVerdict:
    """Score one face. ``crop`` may be None when the face is already too small to keep (or
    when ``sharp``, its sharpness, is given); without ``landmarks`` the pose is taken as
    frontal and the landmark check is skipped."""
    pose = head_pose(landmarks) if landmarks is not None else Pose(0.0, 0.0, 0.0)
    if face_height < settings.min_track_height:
        return QualityVerdict(0.0, False, False, False, 0.0, pose, TOO_SMALL,
                              f"face height {face_height} < min_track_height "
                              f"{settings.min_track_height}")
    residual = landmark_residual(landmarks) if landmarks is not None else 0.0
    if residual > settings.max_landmark_residual:
        return QualityVerdict(0.0, False, False, False, 0.0, pose, NOT_A_FACE,
                              f"landmarks fit no face (residual {residual:.1f} > "
                              f"{settings.max_landmark_residual})")
    if sharp is None:
        sharp = sharpness(crop) if crop is not None else 0.0
    lo = float(settings.min_track_height)
    size_term = float(np.clip((face_height - lo) / max(_FULL_HEIGHT - lo, 1.0), 0.0, 1.0))
    full_sharp = max(settings.min_sharpness * 5.0, 1.0)
    sharp_term = float(np.clip(sharp / full_sharp, 0.0, 1.0))
    score_term = float(np.clip(det_score, 0.0, 1.0))
    pose_term = float(np.clip(1.0 - abs(pose.yaw) / 90.0, 0.0, 1.0))
    quality = round(0.35 * size_term + 0.25 * score_term + 0.2 * sharp_term + 0.2 * pose_term, 4)

    weak = []  # not matchable
    if face_height < settings.min_match_height:
        weak.append(f"face height {face_height} < min_match_height {settings.min_match_height}")
    if abs(pose.yaw) > settings.max_match_yaw:
        weak.append(f"turned {abs(pose.yaw):.0f} deg > max_match_yaw {settings.max_match_yaw}")
    if residual > settings.max_match_residual:
        weak.append(f"landmark residual {residual:.1f} > {settings.max_match_residual}")
    reasons = list(weak)
    if face_height < settings.min_face_height:
        reasons.append(f"face height {face_height} < {settings.min_face_height}")
    if det_score < settings.min_det_score:
        reasons.append(f"detector score {det_score:.2f} < {settings.min_det_score}")
    if sharp < settings.min_sharpness:
        reasons.append(f"sharpness {sharp:.1f} < {settings.min_sharpness}")
    if abs(pose.yaw) > settings.max_create_yaw:
        reasons.append(f"turned {abs(pose.yaw):.0f} deg > max_create_yaw {settings.max_create_yaw}")
    if abs(pose.pitch) > settings.max_create_pitch:
        reasons.append(f"pitch {pose.pitch:.0f} deg beyond max_create_pitch "
                       f"{settings.max_create_pitch}")
    return QualityVerdict(quality, not reasons, not weak, True, sharp, pose, "", "; ".join(reasons))
