"""Head pose and landmark plausibility from the detector's five landmarks.

No extra model: the five points (eyes, nose tip, mouth corners) already say how far a head
is turned. Yaw comes from how far the nose sits off the line between the eye and mouth
midpoints (in half eye distances), pitch from where the nose sits between eyes and mouth,
roll from the eye line. The yaw scale was fitted against Intel's
head-pose-estimation-adas-0001 on real clip faces (docs/accuracy.md); a profile saturates
at 90 degrees, which is all a gate needs.

The residual of the least-squares fit of the five points onto the face template measures
how face-like their arrangement is: a box on the back of a head or on an object gets
landmarks that fit no face.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from revisit.vision.align import ARCFACE_TEMPLATE, CROP_SIZE, similarity_transform

_YAW_SCALE = 0.40  # sin(yaw) per half eye distance of nose offset (fitted, module docstring)
_PITCH_NEUTRAL = 0.49  # nose position between eye and mouth lines of a level head
_PITCH_DEG = 123.0  # degrees per unit of that position


@dataclass(frozen=True, slots=True)
class Pose:
    """Head pose in degrees: yaw (left/right turn), pitch (+ = down), roll (tilt)."""

    yaw: float
    pitch: float
    roll: float


def head_pose(landmarks: np.ndarray) -> Pose:
    """Pose from (5, 2) landmarks: right eye, left eye, nose, mouth right, mouth left."""
    p = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
    eye_r, eye_l, nose, mouth_r, mouth_l = p
    eyes = (eye_r + eye_l) / 2
    mouth = (mouth_r + mouth_l) / 2
    eye_dist = float(np.linalg.norm(eye_l - eye_r))
    down = mouth - eyes
    height = float(np.linalg.norm(down))
    if eye_dist < 1e-6 or height < 1e-6:
        return Pose(90.0, 0.0, 0.0)
    across = (eye_l - eye_r) / eye_dist
    offset = float((nose - (eyes + mouth) / 2) @ across) / (eye_dist / 2)
    yaw = float(np.degrees(np.arcsin(np.clip(_YAW_SCALE * offset, -1.0, 1.0))))
    depth = float((nose - eyes) @ (down / height)) / height
    pitch = _PITCH_DEG * (depth - _PITCH_NEUTRAL)
    roll = float(np.degrees(np.arctan2(eye_l[1] - eye_r[1], eye_l[0] - eye_r[0])))
    return Pose(round(yaw, 1), round(pitch, 1), round(roll, 1))


def landmark_residual(landmarks: np.ndarray) -> float:
    """Mean distance (px of the 112 px crop) between the landmarks mapped onto the face
    template and the template: small for faces, large for most backs of heads."""
    p = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
    m = similarity_transform(p)
    mapped = p @ m[:, :2].T + m[:, 2]
    scale = CROP_SIZE / 112.0
    return float(np.sqrt(((mapped - ARCFACE_TEMPLATE * scale) ** 2).sum(axis=1)).mean())
