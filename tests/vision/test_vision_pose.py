"""Head pose and landmark plausibility from the five landmarks."""

import numpy as np
import pytest

from revisit.vision.align import ARCFACE_TEMPLATE
from revisit.vision.pose import head_pose, landmark_residual


def _face(scale: float = 1.0, shift: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    return (ARCFACE_TEMPLATE * scale + np.array(shift, np.float32)).astype(np.float32)


def test_a_frontal_face_is_level_and_fits_the_template():
    pose = head_pose(_face(0.5, (30, 40)))
    assert abs(pose.yaw) < 3 and abs(pose.roll) < 1
    assert landmark_residual(_face(0.5, (30, 40))) < 0.5


@pytest.mark.parametrize("offset", [4.0, 8.0, 12.0])
def test_yaw_grows_and_takes_the_side_of_the_nose(offset):
    lm = _face()
    right, left = lm.copy(), lm.copy()
    right[2, 0] += offset
    left[2, 0] -= offset
    yr, yl = head_pose(right).yaw, head_pose(left).yaw
    assert yr > 5 and yl < -5 and abs(yr + yl) < 1
    smaller = lm.copy()
    smaller[2, 0] += offset / 2
    assert head_pose(smaller).yaw < yr


def test_a_profile_saturates_at_ninety_degrees():
    lm = _face()
    lm[1, 0] = lm[0, 0] + 8  # the far eye seen almost behind the near one
    lm[4, 0] = lm[3, 0] + 6
    lm[2, 0] = lm[1, 0] + 12  # the nose tip past both
    assert head_pose(lm).yaw == pytest.approx(90.0)


def test_roll_follows_the_eye_line():
    lm = _face()
    c = lm.mean(axis=0)
    a = np.radians(20)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]], np.float32)
    tilted = (lm - c) @ rot.T + c
    assert head_pose(tilted).roll == pytest.approx(20, abs=0.5)
    assert landmark_residual(tilted) < 0.5  # a tilted face is still a face


def test_a_bowed_head_has_positive_pitch():
    lm = _face()
    down = lm.copy()
    down[2, 1] += 8  # nose tip nearer the mouth
    assert head_pose(down).pitch > head_pose(lm).pitch + 10


def test_landmarks_of_no_face_do_not_fit():
    lm = _face()
    scrambled = lm[[3, 4, 2, 0, 1]]  # mouth where the eyes are
    assert landmark_residual(scrambled) > 12
