"""Round trips of every Batch field through the broker codec, and refusal of bad payloads."""

from __future__ import annotations

from datetime import UTC

import msgpack
import numpy as np
import pytest
from tests.queue.queue_testdata import TS, full_batch

from revisit.queue.codec import CodecError, decode_batch, encode_batch
from revisit.records import Batch


def assert_arrays(a: np.ndarray | None, b: np.ndarray | None) -> None:
    if a is None or b is None:
        assert a is None and b is None
        return
    assert a.dtype == b.dtype and a.shape == b.shape
    assert np.array_equal(a, b)
    assert b.flags.writeable


def test_round_trip_every_field() -> None:
    src = full_batch()
    out = decode_batch(encode_batch(src))
    assert out.batch_id == "B-1"
    for a, b in zip(src.frames, out.frames, strict=True):
        assert (a.tenant, a.camera_id, a.location_id, a.image_id, a.data, a.source) == (
            b.tenant, b.camera_id, b.location_id, b.image_id, b.data, b.source)
        assert b.ts == a.ts and b.ts.tzinfo == UTC and b.ts.microsecond == 123456
        assert b.pixels is None  # never serialised
    for a, b in zip(src.faces, out.faces, strict=True):
        for f in ("tenant", "camera_id", "location_id", "image_id", "ts", "face_image_id",
                  "bbox", "det_score", "quality", "creatable", "zone"):
            assert getattr(a, f) == getattr(b, f), f
        assert isinstance(b.bbox, tuple)
        assert_arrays(a.landmarks, b.landmarks)
        assert_arrays(a.crop, b.crop)
        assert_arrays(a.embedding, b.embedding)
    assert out.faces[0].crop.shape == (112, 112, 3) and out.faces[0].crop.dtype == np.uint8
    assert out.faces[0].embedding.dtype == np.float32
    assert out.faces[1].crop is None and out.faces[1].embedding is None
    for a, b in zip(src.sightings, out.sightings, strict=True):
        for f in ("tenant", "face_id", "face_image_id", "image_id", "camera_id", "location_id",
                  "ts", "bbox", "quality", "match_score", "new_visitor", "zone"):
            assert getattr(a, f) == getattr(b, f), f
        assert_arrays(a.embedding, b.embedding)
    assert out.rejected == src.rejected
    e0, e1 = src.exemplars_added[0], out.exemplars_added[0]
    assert (e0.tenant, e0.visitor_id, e0.face_image_id, e0.quality, e0.ts) == (
        e1.tenant, e1.visitor_id, e1.face_image_id, e1.quality, e1.ts)
    assert_arrays(e0.embedding, e1.embedding)
    assert out.exemplars_dropped == [("t1", "F-0")]
    assert out.visitors_created == [("t1", "V-0001A7", TS)]
    assert out.visitors_created[0][2].tzinfo == UTC
    assert out.scenes == src.scenes  # the heatmaps' backgrounds in distributed mode
    assert out.counts == src.counts  # occupancy


def test_version_2_payloads_without_scenes_still_decode() -> None:
    doc = msgpack.unpackb(encode_batch(full_batch()), raw=False)
    doc["v"] = 2
    del doc["scenes"]
    del doc["counts"]
    out = decode_batch(msgpack.packb(doc, use_bin_type=True))
    assert out.scenes == [] and len(out.sightings) == 2


def test_empty_batch_round_trip() -> None:
    out = decode_batch(encode_batch(Batch("B-empty")))
    assert out == Batch("B-empty")


def test_numpy_scalars_and_big_endian_are_normalised() -> None:
    b = full_batch()
    b.faces[0].det_score = np.float32(0.5)
    b.faces[0].bbox = tuple(np.int64(v) for v in (1, 2, 3, 4))
    b.faces[0].embedding = b.faces[0].embedding.astype(">f4")
    out = decode_batch(encode_batch(b))
    assert out.faces[0].det_score == 0.5 and out.faces[0].bbox == (1, 2, 3, 4)
    assert out.faces[0].embedding.dtype == np.dtype("<f4")
    assert np.array_equal(out.faces[0].embedding, b.faces[0].embedding)


def test_payload_is_not_pickle_and_compact() -> None:
    b = full_batch()
    b.frames[0].pixels = np.zeros((480, 640, 3), np.uint8)
    payload = encode_batch(b)
    assert b"pickle" not in payload and not payload.startswith(b"\x80")
    assert len(payload) < 480 * 640  # pixels were dropped


def test_object_arrays_are_refused_on_encode() -> None:
    b = full_batch()
    b.faces[0].embedding = np.array([object()], dtype=object)
    with pytest.raises(CodecError, match="dtype"):
        encode_batch(b)


def _tamper(mutate) -> bytes:
    doc = msgpack.unpackb(encode_batch(full_batch()), raw=False)
    mutate(doc)
    return msgpack.packb(doc, use_bin_type=True)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.update(v=99), "version"),
        (lambda d: d["faces"][0]["embedding"].update(d="|O"), "dtype"),
        (lambda d: d["faces"][0]["crop"].update(s=[112, 112, 4]), "cannot hold"),
        (lambda d: d["faces"][0]["crop"].update(s=[1] * 9), "shape"),
        (lambda d: d["frames"][0].update(ts="2024-01-01"), "timestamp"),
        (lambda d: d["faces"][0].update(bbox=[1, 2, 3]), "bbox"),
        (lambda d: d["frames"][0].pop("tenant"), "tenant"),
        (lambda d: d.update(frames={"a": 1}), "frames"),
        (lambda d: d["sightings"][0].update(new_visitor="yes"), "new_visitor"),
        (lambda d: d["scenes"][0].update(width=0), "scene width"),
        (lambda d: d["scenes"][0].update(jpeg="text"), "scene jpeg"),
        (lambda d: d["counts"][0].update(raw=-1), "raw"),
        (lambda d: d["counts"][0].update(count="7"), "count"),
        (lambda d: d["counts"][0].update(points=[[1, 2, 3]]), "point"),
    ],
)
def test_tampered_payloads_raise_codec_error(mutate, message: str) -> None:
    with pytest.raises(CodecError, match=message):
        decode_batch(_tamper(mutate))


@pytest.mark.parametrize("payload", [b"", b"\x80\x04garbage", b"\xc1", msgpack.packb([1, 2])])
def test_garbage_raises_codec_error(payload: bytes) -> None:
    with pytest.raises(CodecError):
        decode_batch(payload)
