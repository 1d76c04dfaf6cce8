import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import numpy as np
import pytest
from tests.vision.vision_testdata import TS, make_frame, read

from revisit.config import Settings
from revisit.records import Batch, Rejected, face_image_id
from revisit.vision import Vision, decode, detect_batch, embed_batch

PHOTOS = ["Job_Cohen/Job_Cohen_0001.jpg", "Dan_Morales/Dan_Morales_0001.jpg"]


def _batch(lfw, shared_data, extra=()):
    frames = [make_frame((lfw / p).read_bytes(), p) for p in PHOTOS]
    couple = shared_data / "deepface-ids" / "_unlabelled" / "couple.jpg"
    frames.append(make_frame(couple.read_bytes(), "couple"))
    frames.extend(extra)
    return Batch("b1", frames=frames)


@pytest.mark.parametrize("data,reason", [
    (b"", "no image data"),
    (b"hello, this is not an image", "not a supported image"),
    (b"%PDF-1.4 fake", "not a supported image"),
    (b"\xff\xd8\xff\xe0" + b"\x00" * 200, "corrupt"),
    (b"\x89PNG\r\n\x1a\n" + b"garbage" * 20, "corrupt"),
])
def test_bad_bytes_become_rejected_with_a_reason(data, reason):
    out = decode(make_frame(data, "bad"))
    assert isinstance(out, Rejected)
    assert reason in out.reason
    assert out.image_id == "bad" and out.tenant == "t1" and out.source == "bad"


def test_truncated_jpeg_is_rejected(lfw):
    data = (lfw / PHOTOS[0]).read_bytes()[:300]
    assert isinstance(decode(make_frame(data, "cut")), Rejected)


def test_decode_reads_real_jpeg(lfw):
    pixels = decode(make_frame((lfw / PHOTOS[0]).read_bytes(), "ok"))
    assert isinstance(pixels, np.ndarray)
    assert pixels.shape == (250, 250, 3) and pixels.dtype == np.uint8


def test_detect_batch_fills_faces_and_frees_pixels(vision, settings, lfw, shared_data):
    bad = make_frame(b"not an image", "bad-frame")
    batch = detect_batch(_batch(lfw, shared_data, [bad]), vision.detector, settings)
    assert [r.image_id for r in batch.rejected] == ["bad-frame"]
    assert [f.image_id for f in batch.frames] == [*PHOTOS, "couple"]
    assert all(f.data is None and f.pixels is None for f in batch.frames)
    per_frame = {f.image_id: 0 for f in batch.frames}
    for face in batch.faces:
        per_frame[face.image_id] += 1
        assert face.crop is not None and face.crop.shape == (112, 112, 3)
        assert face.embedding is None
        assert face.face_image_id == face_image_id("t1", face.image_id, face.bbox)
        assert face.camera_id == "cam-1" and face.location_id == "store-1"
    assert per_frame[PHOTOS[0]] >= 1 and per_frame[PHOTOS[1]] >= 1 and per_frame["couple"] >= 2


def test_face_image_ids_are_deterministic(vision, settings, lfw, shared_data):
    a = detect_batch(_batch(lfw, shared_data), vision.detector, settings)
    b = detect_batch(_batch(lfw, shared_data), Vision(settings).detector, settings)
    ids_a = [f.face_image_id for f in a.faces]
    assert ids_a == [f.face_image_id for f in b.faces]
    assert len(set(ids_a)) == len(ids_a)


def test_embed_batch_fills_unit_embeddings_and_drops_crops(vision, settings, lfw, shared_data):
    batch = embed_batch(detect_batch(_batch(lfw, shared_data), vision.detector, settings),
                        vision.embedder, settings)
    assert batch.faces
    for face in batch.faces:
        assert face.crop is None
        assert face.embedding.shape == (vision.embedder.dim,) and face.embedding.dtype == np.float32
        assert abs(np.linalg.norm(face.embedding) - 1.0) < 1e-4


def test_keep_crops_keeps_them(lfw, shared_data):
    s = Settings(privacy={"keep_crops": True}, embedder={"batch_size": 2})
    v = Vision(s)
    batch = v.process(_batch(lfw, shared_data))
    assert batch.faces and all(f.crop is not None and f.embedding is not None for f in batch.faces)


def test_already_decoded_frames_skip_decoding(vision, settings, lfw):
    frame = make_frame(b"", "pix")
    frame.pixels = read(lfw / PHOTOS[0])
    batch = detect_batch(Batch("b", frames=[frame]), vision.detector, settings)
    assert not batch.rejected and batch.faces


def _png_bomb(width: int, height: int) -> bytes:
    """A grey PNG that compresses to next to nothing whatever its declared size."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))

    pack = zlib.compressobj(9)
    row = b"\x00" + b"\x80" * width
    idat = b"".join(pack.compress(row) for _ in range(height)) + pack.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0,
                                                               0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def test_an_image_declaring_too_many_pixels_is_refused_undecoded():
    """Every input (a manifest, a video-less camera folder, a replayed batch) meets the
    bound the HTTP API applies at the door: a 20000 x 20000 PNG of 1 MB once took 2.5 GB."""
    bomb = make_frame(_png_bomb(4000, 3000), "bomb")
    out = decode(bomb, max_pixels=10_000_000)
    assert isinstance(out, Rejected)
    assert "4000x3000 = 12000000 pixels; at most 10000000" in out.reason
    batch = Batch("b1", frames=[make_frame(_png_bomb(4000, 3000), "bomb")])

    class NoDetector:
        def predict(self, images):
            raise AssertionError("a refused image reached the detector")

    settings = Settings(ingest={"max_pixels": 10_000_000})
    out_batch = detect_batch(batch, NoDetector(), settings)  # type: ignore[arg-type]
    assert out_batch.frames == [] and "ingest.max_pixels" in out_batch.rejected[0].reason
    small = decode(make_frame(_png_bomb(40, 30), "small"), max_pixels=10_000_000)
    assert getattr(small, "shape", None) == (30, 40, 3)


def test_a_file_that_is_no_image_is_not_repeated_in_the_reason() -> None:
    """A manifest may name any file ingest can read (/etc/passwd): the reason says what
    kind of thing it is, never its content."""
    out = decode(make_frame(b"root:x:0:0:root:/root:/bin/bash\nsecret", "p"))
    assert isinstance(out, Rejected) and "root" not in out.reason
    assert "start like text" in out.reason
    out = decode(make_frame(b"\x00\x01secret-binary", "b"))
    assert isinstance(out, Rejected) and "secret" not in out.reason and "like data" in out.reason


def test_every_input_takes_tiff_and_refuses_avif_as_the_api_does() -> None:
    """Manifests, replayed batches and `known enrol` photos meet the one list of formats
    (revisit.image_formats): a TIFF is decoded, an AVIF refused in the API's words."""
    from tests.conftest import lfw_still

    tiff = decode(make_frame(lfw_still("Colin_Powell", 1, "TIFF", compression="tiff_lzw"), "t"),
                  max_pixels=10_000_000)
    assert getattr(tiff, "shape", None) == (250, 250, 3)
    avif = decode(make_frame(lfw_still("Colin_Powell", 1, "AVIF"), "a"), max_pixels=10_000_000)
    assert isinstance(avif, Rejected) and avif.reason == (
        "AVIF is not a supported image format (accepted: JPEG, PNG, WebP, BMP, TIFF)")


def test_an_image_whose_size_the_header_check_cannot_read_is_not_decoded() -> None:
    """A JPEG with one stray byte before its frame header: libjpeg skips the byte and
    decodes whatever size the header declares, so the decoder must not judge it alone (it
    once did, past the pixel bound, where the API refused the image as corrupt)."""
    import struct

    import cv2

    data = bytearray(cv2.imencode(".jpg", np.full((16, 16, 3), 128, np.uint8))[1].tobytes())
    i = 2
    while data[i + 1] != 0xC0:
        i += 2 + struct.unpack(">H", data[i + 2:i + 4])[0]
    data[i + 5:i + 9] = struct.pack(">HH", 3000, 4000)
    out = decode(make_frame(bytes(data[:i]) + b"\x00" + bytes(data[i:]), "stray"),
                 max_pixels=10_000_000)
    assert isinstance(out, Rejected) and "corrupt JPEG" in out.reason


def _cameras_minutes_apart(lfw) -> list:
    """Two cameras, a snapshot a minute each, a bad one among them: enough for the scene
    keeper to sample every frame and emit each camera's empty scene (one image size per
    camera: a camera whose size changes starts its samples again)."""
    photos = [(lfw / p).read_bytes() for p in PHOTOS]  # both 250 x 250
    frames = []
    for i in range(14):
        f = make_frame(photos[i // 2 % 2] if i != 5 else b"not an image", f"f{i}")
        f.camera_id = f"cam-{i % 2}"
        f.ts = TS + timedelta(minutes=i)
        frames.append(f)
    return frames


def _outcome(batch: Batch) -> tuple:
    return ([(f.image_id, f.face_image_id, f.bbox, f.quality, f.creatable) for f in batch.faces],
            [r.image_id for r in batch.rejected],
            [(d.image_id, d.bbox, d.reason) for d in batch.dropped],
            [(s.camera_id, s.frames, s.jpeg) for s in batch.scenes],
            [f.image_id for f in batch.frames])


def test_decoding_ahead_in_a_thread_of_its_own_changes_nothing(lfw, monkeypatch):
    """The detect stage decodes (and samples scenes) a frame or two ahead in another thread:
    the same faces, rejections, drops and scenes, in the same order, as decoding inline."""
    from revisit.vision import stages

    threads: list[str] = []
    real = stages.decode
    def noted(frame, max_pixels=None):
        threads.append(threading.current_thread().name)
        return real(frame, max_pixels)

    monkeypatch.setattr(stages, "decode", noted)
    outcomes = {}
    for ahead in (False, True):
        v = Vision(Settings(pipeline={"threads": 2, "decode_ahead": ahead}))
        threads.clear()
        outcomes[ahead] = _outcome(v.detect(Batch("b", frames=_cameras_minutes_apart(lfw))))
        v.close()
        decoded_here = {t == threading.current_thread().name for t in threads}
        assert decoded_here == {not ahead}, threads
    assert outcomes[True][3], "the scene keeper should have emitted scenes"
    assert outcomes[True][1] == ["f5"]
    assert outcomes[True] == outcomes[False]


def test_a_detector_failing_mid_batch_leaves_no_decoding_behind(lfw, monkeypatch):
    from revisit.vision import stages

    started, finished = [], []
    real = stages.decode

    def slow_decode(frame, max_pixels=None):
        started.append(frame.image_id)
        time.sleep(0.05)
        finished.append(frame.image_id)
        return real(frame, max_pixels)

    monkeypatch.setattr(stages, "decode", slow_decode)

    class Failing:
        def predict(self, images):
            if len(finished) >= 2:
                raise RuntimeError("model lost")
            return [[]]

    pool = ThreadPoolExecutor(1)
    with pytest.raises(RuntimeError, match="model lost"):
        detect_batch(Batch("b", frames=_cameras_minutes_apart(lfw)), Failing(),
                     Settings(), ahead=pool)  # type: ignore[arg-type]
    assert started == finished and len(started) < 14  # stopped early, nothing left running
    pool.shutdown()
