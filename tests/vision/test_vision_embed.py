import itertools

import numpy as np
import pytest
from tests.vision.vision_testdata import read

from revisit.config import Settings
from revisit.vision import Vision
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


def _vision_of(model: str) -> Vision:
    return Vision(Settings(pipeline={"threads": 2}, embedder={"model": model}))


@pytest.fixture(params=["sface-reid", "sface", "reid0095", "arcface"])
def embedder(request, arcface_vision):
    if request.param == "arcface":
        return arcface_vision.embedder
    return _vision_of(request.param).embedder


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
    t = embedder.match_threshold
    emb = {p: embedder.predict(crops[p]) for p in PEOPLE}
    for p in PEOPLE:
        assert float(emb[p][0] @ emb[p][1]) > t, p
    for a, b in itertools.permutations(PEOPLE, 2):
        assert float(emb[a][0] @ emb[b][1]) < t, (a, b)


def test_the_default_is_sface_and_the_intel_model_side_by_side(crops):
    """A cosine of sface-reid embeddings is the mean of the two models' cosines, and its face
    check is SFace's raw norm."""
    both, sface, reid = (_vision_of(m).embedder for m in ("sface-reid", "sface", "reid0095"))
    a, b = crops[PEOPLE[0]]
    mean = (float(sface.embed(a) @ sface.embed(b)) + float(reid.embed(a) @ reid.embed(b))) / 2
    assert float(both.embed(a) @ both.embed(b)) == pytest.approx(mean, abs=1e-4)
    _, norms = both.predict_with_norms([a])
    _, sface_norms = sface.predict_with_norms([a])
    assert norms[0] == pytest.approx(sface_norms[0], rel=1e-5)


def test_a_back_of_head_fails_the_face_check_a_face_passes(crops):
    """The embedding-space face check: a crop with no face in it (a dark, hair-like blob
    on a pale wall) has a raw SFace norm under the floor; real faces clear the match bar."""
    emb = _vision_of("sface").embedder
    blob = np.full((112, 112, 3), 200, np.uint8)
    yy, xx = np.mgrid[:112, :112]
    blob[(yy - 60) ** 2 + (xx - 56) ** 2 < 45 ** 2] = (30, 25, 20)
    _, norms = emb.predict_with_norms([blob, *_all(crops)])
    assert norms[0] < emb.faceness_floor
    assert (norms[1:] >= emb.faceness_match).all()


@pytest.mark.parametrize("runtime,precision,least_cosine", [
    ("onnxruntime", "auto", 0.99999), ("openvino", "f32", 0.99999), ("openvino", "auto", 0.999)])
def test_sface_float_graph_gives_opencvs_embeddings(crops, runtime, precision, least_cosine):
    """The float graph folded from the int8 block-quantised file, batched in onnxruntime or
    OpenVINO, is the same model as OpenCV's one-face-at-a-time runtime (the fallback);
    OpenVINO's auto precision (bf16 on CPUs that have it) moves it by rounding only."""
    from revisit.vision.embed import SFaceEmbedder

    fast = SFaceEmbedder(threads=1, batch_size=5, runtime=runtime, precision=precision)
    slow = SFaceEmbedder(threads=1, runtime="opencv")
    a, na = fast.predict_with_norms(_all(crops))
    b, nb = slow.predict_with_norms(_all(crops))
    assert fast._graph is not None and fast._graph.runtime == runtime and slow._graph is None
    assert float(np.min(np.sum(a * b, axis=1))) > least_cosine
    np.testing.assert_allclose(na, nb, rtol=1e-4 if precision == "f32" or runtime != "openvino"
                               else 2e-2)  # the face check's norms too


def test_openvino_runs_concurrent_embedders_on_their_own_cores(crops, monkeypatch):
    """Embed workers share one compiled SFace: it needs a stream per worker (one stream
    runs one request at a time)."""
    from revisit.vision import model
    from revisit.vision.embed import SFaceEmbedder

    cores = model.resolve_threads(0)
    if cores < 2:
        pytest.skip("one core: nothing runs concurrently")
    monkeypatch.setattr(model, "_COMPILED", {})
    emb = SFaceEmbedder(threads=1, runtime="openvino")
    emb.predict(_all(crops)[:2])
    (_, compiled), = model._COMPILED.values()
    # as many streams as OpenVINO grants this CPU when asked for one per core
    import openvino as ov

    core = ov.Core()
    granted = int(core.compile_model(core.read_model(emb._graph._graph), "CPU", {
        "NUM_STREAMS": cores, "INFERENCE_NUM_THREADS": cores}).get_property("NUM_STREAMS"))
    if granted < 2:
        pytest.skip("OpenVINO runs one stream on this CPU")
    assert int(compiled.get_property("NUM_STREAMS")) == granted
    # one thread of one stream alone (say, the people detector) floats: pinned, it would
    # sit on core 0 with every other one-thread model
    alone = model.openvino_net(emb._graph._graph, 1, [-1, 3, 112, 112])
    assert int(alone.get_property("NUM_STREAMS")) == 1
    assert alone.get_property("ENABLE_CPU_PINNING") is False


def test_auto_precision_is_bf16_only_where_the_cpu_computes_it(monkeypatch):
    """bf16 was measured within the accuracy bounds where the CPU has it (AVX-512 BF16 or
    AMX); elsewhere OpenVINO would emulate it, and auto is f32."""
    from revisit.config import Settings
    from revisit.vision import model

    assert Settings().pipeline.precision == "auto"
    for bf16, expected in ((True, "bf16"), (False, "f32")):
        monkeypatch.setattr(model, "has_bf16", lambda bf16=bf16: bf16)
        assert model.resolve_precision("auto") == expected
        assert model.resolve_precision("f32") == "f32"
        assert model.resolve_precision("bf16") == "bf16"
