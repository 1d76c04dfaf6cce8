import cv2
import numpy as np
import pytest
from tests.vision.vision_testdata import jpeg, make_frame, read

from revisit.config import QualitySettings
from revisit.records import Batch
from revisit.vision import detect_batch
from revisit.vision.quality import assess, sharpness

PHOTO = "Aaron_Sorkin/Aaron_Sorkin_0001.jpg"


def _only_face(vision, settings, image, image_id):
    batch = detect_batch(Batch("b", frames=[make_frame(jpeg(image), image_id)]),
                         vision.detector, settings)
    return batch.faces


def _central(faces, image):
    h, w = image.shape[:2]
    return min(faces, key=lambda f: abs(f.bbox[0] + f.bbox[2] / 2 - w / 2)
               + abs(f.bbox[1] + f.bbox[3] / 2 - h / 2))


def test_a_sharp_full_size_face_is_creatable(vision, settings, lfw):
    image = read(lfw / PHOTO)
    face = _central(_only_face(vision, settings, image, "sharp"), image)
    assert face.creatable
    assert 0.7 < face.quality <= 1.0


def test_a_small_face_matches_but_never_creates(vision, settings, lfw):
    image = read(lfw / PHOTO)
    # ~110 px face -> ~30 px: above min_match_height (20), below min_face_height (40)
    small = cv2.resize(image, (70, 70), interpolation=cv2.INTER_AREA)
    canvas = np.full((240, 320, 3), 90, np.uint8)
    canvas[80:150, 120:190] = small
    faces = _only_face(vision, settings, canvas, "small")
    assert faces, "YuNet should still find a 30 px face"
    face = _central(faces, canvas)
    assert settings.quality.min_match_height <= face.bbox[3] < settings.quality.min_face_height
    assert not face.creatable
    big = _central(_only_face(vision, settings, image, "big"), image)
    assert face.quality < big.quality


def test_a_blurred_face_never_creates(vision, settings, lfw):
    image = read(lfw / PHOTO)
    blurred = cv2.GaussianBlur(image, (0, 0), sigmaX=4)
    faces = _only_face(vision, settings, blurred, "blurred")
    assert faces
    face = _central(faces, blurred)
    assert face.bbox[3] >= settings.quality.min_face_height  # size is fine, sharpness is not
    assert sharpness(face.crop) < settings.quality.min_sharpness
    assert not face.creatable


def test_faces_below_min_track_height_are_dropped_with_the_reason(vision, lfw):
    from revisit.config import Settings

    strict = Settings(quality={"min_track_height": 300, "min_match_height": 300,
                               "min_face_height": 300})
    image = read(lfw / PHOTO)
    batch = detect_batch(Batch("b", frames=[make_frame(jpeg(image), "dropped")]),
                         vision.detector, strict)
    assert batch.faces == []
    assert batch.dropped and {d.reason for d in batch.dropped} == {"too_small"}
    assert "min_track_height" in batch.dropped[0].detail


def test_faces_below_min_match_height_only_follow_their_track(vision, lfw):
    from revisit.config import Settings

    loose = Settings(quality={"min_match_height": 300, "min_face_height": 300})
    image = read(lfw / PHOTO)
    face = _central(_only_face(vision, loose, image, "track-only"), image)
    assert not face.matchable and not face.creatable


def test_assess_reasons_and_bounds():
    crop = np.random.default_rng(0).integers(0, 255, (112, 112, 3), dtype=np.uint8)
    q = QualitySettings()
    good = assess(120, 0.95, crop, q)
    assert good.keep and good.creatable and 0.0 <= good.quality <= 1.0 and good.reason == ""
    low = assess(120, 0.5, crop, q)
    assert low.keep and not low.creatable and "detector score" in low.reason
    flat = assess(120, 0.95, np.full((112, 112, 3), 128, np.uint8), q)
    assert not flat.creatable and "sharpness" in flat.reason
    tiny = assess(10, 0.95, crop, q)
    assert not tiny.keep and not tiny.creatable and tiny.quality == 0.0
    assert tiny.drop == "too_small"
    small = assess(14, 0.95, crop, q)
    assert small.keep and not small.matchable and "min_match_height" in small.reason


@pytest.mark.parametrize("height", [20, 40, 80, 100, 200])
def test_quality_grows_with_size(height):
    crop = np.random.default_rng(1).integers(0, 255, (112, 112, 3), dtype=np.uint8)
    q = QualitySettings()
    assert assess(height, 0.9, crop, q).quality <= assess(height + 10, 0.9, crop, q).quality
