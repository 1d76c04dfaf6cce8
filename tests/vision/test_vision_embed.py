import itertools

import numpy as np
import pytest
from tests.vision.vision_testdata import read

from revisit.vision import DEFAULT_MATCH_THRESHOLD
from revisit.vision.align import align_crop

# Two photos each of eight lfw-dev people (every 80th person with >= 2 photos).
PEOPLE = ["Aaron_Sorkin", "Billy_Graham", "Dan_Morales", "Fabrice_Santoro", "Heinz_Feldmann",
          "Job_Cohen", "LK_Advani", "Michael_Jordan"]


@pytest.fixture(scope="module")
def crops(vision, lfw):
    out = {}
    for person in PEOPLE:
        pair = []
        for i in (1, 2):
            image = read(lfw / person / f"{person}_{i:04d}.jpg")
            det = max(vision.detector.detect(image), key=lambda d: d.bbox[3])
            pair.append(align_crop(image, det.landmarks))
        out[person] = pair
    return out


@pytest.fixture(params=["sface", "arcface"])
def embedder(request, vision, arcface_vision):
    return (vision if request.param == "sface" else arcface_vision).embedder


def _all(crops):
    return [c for p in PEOPLE for c in crops[p]]


def test_embeddings_are_unit_norm_float32(embedder, crops):
    emb = embedder.predict(_all(crops))
    assert emb.dtype == np.float32 and emb.shape == (2 * len(PEOPLE), embedder.dim)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)


def test_batch_equals_one_by_one(embedder, crops):
    batch = embedder.predict(_all(crops))
    single = np.stack([embedder.embed(c) for c in _all(crops)])
    np.testing.assert_allclose(batch, single, atol=1e-5)


def test_same_person_above_threshold_different_below(embedder, crops):
    t = DEFAULT_MATCH_THRESHOLD[embedder.name]
    emb = {p: embedder.predict(crops[p]) for p in PEOPLE}
    for p in PEOPLE:
        assert float(emb[p][0] @ emb[p][1]) > t, p
    for a, b in itertools.permutations(PEOPLE, 2):
        assert float(emb[a][0] @ emb[b][1]) < t, (a, b)


def test_sface_matches_opencv_feature(vision, crops):
    """Our SFace numbers are FaceRecognizerSF.feature's, normalised."""
    emb = vision.embedder
    emb.load()
    crop = crops[PEOPLE[0]][0]
    raw = emb._net.feature(crop).reshape(-1)
    np.testing.assert_allclose(emb.embed(crop), raw / np.linalg.norm(raw), atol=1e-6)
