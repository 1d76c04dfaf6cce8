"""Batch <-> bytes for brokers, without pickle.

Broker payloads are untrusted input (anyone who can write to the stream can craft one), so
the format is plain msgpack of maps, lists, strings, numbers and byte strings: decoding can
never run code. Arrays travel as ``{dtype, shape, raw bytes}`` with the dtype checked against
a short allow-list and the byte count checked against the shape. Timestamps travel as integer
microseconds since the Unix epoch (UTC), which round-trips exactly.

Frames carry their encoded image (``data``), never the decoded ``pixels``: those are ~10x
larger and the decode step rebuilds them. Faces carry their crop (if still present) and
embedding.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import msgpack
import numpy as np

from revisit.records import (
    Batch,
    Dropped,
    Exemplar,
    Face,
    Frame,
    PeopleCount,
    Rejected,
    Scene,
    Sighting,
)

FORMAT_VERSION = 4
# older versions this one still reads (2: before batches carried scenes; 3: before
# they carried people counts)
_READS = {2, 3, 4}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
# Little-endian dtypes we expect (crops uint8, embeddings/landmarks float32) plus a few
# harmless numeric ones; anything else (object arrays above all) is refused.
_DTYPES = {"|u1", "<f4", "<f8", "<i4", "<i8", "<u2", "<f2"}
_MAX_NDIM = 4


class CodecError(ValueError):
    """A payload that is not a well-formed encoded batch (corrupt or hostile)."""


def _ts(ts: datetime) -> int:
    if ts.tzinfo is None:
        raise CodecError(f"naive timestamp {ts.isoformat()} cannot be encoded")
    return (ts - _EPOCH) // _US


def _from_ts(v: Any) -> datetime:
    if not isinstance(v, int) or isinstance(v, bool):
        raise CodecError(f"timestamp must be integer microseconds, got {type(v).__name__}")
    try:
        return _EPOCH + timedelta(microseconds=v)
    except OverflowError:
        raise CodecError(f"timestamp {v} out of range") from None


def _arr(a: np.ndarray | None) -> dict[str, Any] | None:
    if a is None:
        return None
    a = np.asarray(a)
    if a.dtype.byteorder == ">" or (a.dtype.byteorder == "=" and np.little_endian is False):
        a = a.astype(a.dtype.newbyteorder("<"))
    dt = a.dtype.str
    if dt not in _DTYPES:
        raise CodecError(f"array dtype {a.dtype} cannot be encoded (allowed: {sorted(_DTYPES)})")
    return {"d": dt, "s": list(a.shape), "b": np.ascontiguousarray(a).tobytes()}


def _from_arr(v: Any) -> np.ndarray | None:
    if v is None:
        return None
    if not isinstance(v, dict) or set(v) != {"d", "s", "b"}:
        raise CodecError("array must be a map with keys d, s, b")
    dt, shape, raw = v["d"], v["s"], v["b"]
    if dt not in _DTYPES:
        raise CodecError(f"array dtype {dt!r} not allowed")
    if (
        not isinstance(shape, list)
        or len(shape) > _MAX_NDIM
        or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape)
    ):
        raise CodecError(f"bad array shape {shape!r}")
    if not isinstance(raw, bytes):
        raise CodecError("array bytes missing")
    dtype = np.dtype(dt)
    if int(np.prod(shape, dtype=np.int64)) * dtype.itemsize != len(raw):
        raise CodecError(f"array of shape {shape} and dtype {dt} cannot hold {len(raw)} bytes")
    # copy: frombuffer is read-only and would keep the whole payload alive.
    return np.frombuffer(raw, dtype=dtype).reshape(shape).copy()


def _bbox(b: tuple[int, int, int, int]) -> list[int]:
    return [int(x) for x in b]


def _from_bbox(v: Any) -> tuple[int, int, int, int]:
    if not isinstance(v, list) or len(v) != 4 or not all(_is_int(x) for x in v):
        raise CodecError(f"bbox must be 4 integers, got {v!r}")
    return (v[0], v[1], v[2], v[3])


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _str(v: Any, what: str) -> str:
    if not isinstance(v, str):
        raise CodecError(f"{what} must be a string, got {type(v).__name__}")
    return v


def _num(v: Any, what: str) -> float:
    if not isinstance(v, int | float) or isinstance(v, bool):
        raise CodecError(f"{what} must be a number, got {type(v).__name__}")
    return float(v)


def _bool(v: Any, what: str) -> bool:
    if not isinstance(v, bool):
        raise CodecError(f"{what} must be a boolean, got {type(v).__name__}")
    return v


def _frame(f: Frame) -> dict[str, Any]:
    return {
        "tenant": f.tenant, "camera_id": f.camera_id, "location_id": f.location_id,
        "image_id": f.image_id, "ts": _ts(f.ts),
        "data": None if f.data is None else bytes(f.data), "source": f.source,
    }


def _from_frame(d: dict[str, Any]) -> Frame:
    data = d["data"]
    if data is not None and not isinstance(data, bytes):
        raise CodecError("frame data must be bytes or nil")
    return Frame(
        tenant=_str(d["tenant"], "tenant"), camera_id=_str(d["camera_id"], "camera_id"),
        location_id=_str(d["location_id"], "location_id"),
        image_id=_str(d["image_id"], "image_id"), ts=_from_ts(d["ts"]), data=data,
        source=_str(d["source"], "source"),
    )


def _face(f: Face) -> dict[str, Any]:
    return {
        "tenant": f.tenant, "camera_id": f.camera_id, "location_id": f.location_id,
        "image_id": f.image_id, "ts": _ts(f.ts), "face_image_id": f.face_image_id,
        "bbox": _bbox(f.bbox), "landmarks": _arr(f.landmarks), "det_score": float(f.det_score),
        "quality": float(f.quality), "creatable": bool(f.creatable), "crop": _arr(f.crop),
        "embedding": _arr(f.embedding), "matchable": bool(f.matchable),
        "pose": [float(v) for v in f.pose],
        "faceness": None if f.faceness is None else float(f.faceness),
        "context": _arr(f.context),
        "contrast": None if f.contrast is None else float(f.contrast),
        "sharpness": None if f.sharpness is None else float(f.sharpness),
        "zone": f.zone,
    }


def _from_face(d: dict[str, Any]) -> Face:
    landmarks = _from_arr(d["landmarks"])
    if landmarks is None:
        raise CodecError("face landmarks missing")
    return Face(
        tenant=_str(d["tenant"], "tenant"), camera_id=_str(d["camera_id"], "camera_id"),
        location_id=_str(d["location_id"], "location_id"),
        image_id=_str(d["image_id"], "image_id"), ts=_from_ts(d["ts"]),
        face_image_id=_str(d["face_image_id"], "face_image_id"), bbox=_from_bbox(d["bbox"]),
        landmarks=landmarks, det_score=_num(d["det_score"], "det_score"),
        quality=_num(d["quality"], "quality"), creatable=_bool(d["creatable"], "creatable"),
        crop=_from_arr(d["crop"]), embedding=_from_arr(d["embedding"]),
        matchable=_bool(d["matchable"], "matchable"), pose=_pose(d["pose"]),
        faceness=None if d["faceness"] is None else _num(d["faceness"], "faceness"),
        context=_from_arr(d["context"]),
        contrast=None if d["contrast"] is None else _num(d["contrast"], "contrast"),
        sharpness=None if d["sharpness"] is None else _num(d["sharpness"], "sharpness"),
        zone=_str(d.get("zone", ""), "zone"),
    )


def _pose(v: Any) -> tuple[float, float, float]:
    if not (isinstance(v, list) and len(v) == 3):
        raise CodecError("pose must be [yaw, pitch, roll]")
    return (_num(v[0], "yaw"), _num(v[1], "pitch"), _num(v[2], "roll"))


def _dropped(d: Dropped) -> dict[str, Any]:
    return {"tenant": d.tenant, "image_id": d.image_id, "bbox": _bbox(d.bbox),
            "reason": d.reason, "detail": d.detail, "source": d.source}


def _from_dropped(d: dict[str, Any]) -> Dropped:
    return Dropped(
        tenant=_str(d["tenant"], "tenant"), image_id=_str(d["image_id"], "image_id"),
        bbox=_from_bbox(d["bbox"]), reason=_str(d["reason"], "reason"),
        detail=_str(d["detail"], "detail"), source=_str(d["source"], "source"),
    )


def _sighting(s: Sighting) -> dict[str, Any]:
    return {
        "tenant": s.tenant, "face_id": s.face_id, "face_image_id": s.face_image_id,
        "image_id": s.image_id, "camera_id": s.camera_id, "location_id": s.location_id,
        "ts": _ts(s.ts), "bbox": _bbox(s.bbox), "quality": float(s.quality),
        "match_score": float(s.match_score), "new_visitor": bool(s.new_visitor),
        "embedding": _arr(s.embedding), "zone": s.zone,
    }


def _from_sighting(d: dict[str, Any]) -> Sighting:
    return Sighting(
        tenant=_str(d["tenant"], "tenant"), face_id=_str(d["face_id"], "face_id"),
        face_image_id=_str(d["face_image_id"], "face_image_id"),
        image_id=_str(d["image_id"], "image_id"), camera_id=_str(d["camera_id"], "camera_id"),
        location_id=_str(d["location_id"], "location_id"), ts=_from_ts(d["ts"]),
        bbox=_from_bbox(d["bbox"]), quality=_num(d["quality"], "quality"),
        match_score=_num(d["match_score"], "match_score"),
        new_visitor=_bool(d["new_visitor"], "new_visitor"), embedding=_from_arr(d["embedding"]),
        zone=_str(d.get("zone", ""), "zone"),
    )


def _rejected(r: Rejected) -> dict[str, Any]:
    return {"source": r.source, "reason": r.reason, "image_id": r.image_id, "tenant": r.tenant,
            "code": r.code}


def _from_rejected(d: dict[str, Any]) -> Rejected:
    return Rejected(
        source=_str(d["source"], "source"), reason=_str(d["reason"], "reason"),
        image_id=_str(d["image_id"], "image_id"), tenant=_str(d["tenant"], "tenant"),
        code=_str(d.get("code", ""), "code"),  # absent in what an earlier version wrote
    )


def _exemplar(e: Exemplar) -> dict[str, Any]:
    return {
        "tenant": e.tenant, "visitor_id": e.visitor_id, "face_image_id": e.face_image_id,
        "embedding": _arr(e.embedding), "quality": float(e.quality), "ts": _ts(e.ts),
    }


def _from_exemplar(d: dict[str, Any]) -> Exemplar:
    emb = _from_arr(d["embedding"])
    if emb is None:
        raise CodecError("exemplar embedding missing")
    return Exemplar(
        tenant=_str(d["tenant"], "tenant"), visitor_id=_str(d["visitor_id"], "visitor_id"),
        face_image_id=_str(d["face_image_id"], "face_image_id"), embedding=emb,
        quality=_num(d["quality"], "quality"), ts=_from_ts(d["ts"]),
    )


def _scene(sc: Scene) -> dict[str, Any]:
    return {"tenant": sc.tenant, "camera_id": sc.camera_id, "width": int(sc.width),
            "height": int(sc.height), "jpeg": bytes(sc.jpeg), "frames": int(sc.frames),
            "ts": _ts(sc.ts)}


def _from_scene(d: dict[str, Any]) -> Scene:
    dims = (d["width"], d["height"], d["frames"])
    if not all(_is_int(x) and x > 0 for x in dims):
        raise CodecError("scene width, height and frames must be positive integers")
    if not isinstance(d["jpeg"], bytes):
        raise CodecError("scene jpeg must be bytes")
    return Scene(tenant=_str(d["tenant"], "tenant"), camera_id=_str(d["camera_id"], "camera_id"),
                 width=d["width"], height=d["height"], jpeg=d["jpeg"], frames=d["frames"],
                 ts=_from_ts(d["ts"]))


def _count(c: PeopleCount) -> dict[str, Any]:
    return {"tenant": c.tenant, "camera_id": c.camera_id, "location_id": c.location_id,
            "image_id": c.image_id, "ts": _ts(c.ts), "zone": c.zone, "count": float(c.count),
            "raw": int(c.raw), "points": [[int(x), int(y)] for x, y in c.points]}


def _from_count(d: dict[str, Any]) -> PeopleCount:
    if not _is_int(d["raw"]) or d["raw"] < 0:
        raise CodecError("people count raw must be a non-negative integer")
    return PeopleCount(
        tenant=_str(d["tenant"], "tenant"), camera_id=_str(d["camera_id"], "camera_id"),
        location_id=_str(d["location_id"], "location_id"),
        image_id=_str(d["image_id"], "image_id"), ts=_from_ts(d["ts"]),
        zone=_str(d["zone"], "zone"), count=_num(d["count"], "count"), raw=d["raw"],
        points=[_from_point(p) for p in _list(d, "points")])


def _from_point(v: Any) -> tuple[int, int]:
    if not isinstance(v, list) or len(v) != 2 or not all(_is_int(x) for x in v):
        raise CodecError(f"a person's point must be 2 integers, got {v!r}")
    return (v[0], v[1])


def encode_batch(batch: Batch) -> bytes:
    """Serialise a batch for a broker. Decoded ``pixels`` are dropped on purpose."""
    doc = {
        "v": FORMAT_VERSION,
        "batch_id": batch.batch_id,
        "frames": [_frame(f) for f in batch.frames],
        "faces": [_face(f) for f in batch.faces],
        "sightings": [_sighting(s) for s in batch.sightings],
        "rejected": [_rejected(r) for r in batch.rejected],
        "dropped": [_dropped(d) for d in batch.dropped],
        "exemplars_added": [_exemplar(e) for e in batch.exemplars_added],
        "exemplars_dropped": [[t, f] for t, f in batch.exemplars_dropped],
        "visitors_created": [[t, v, _ts(ts)] for t, v, ts in batch.visitors_created],
        "visitors_withdrawn": [[t, v] for t, v in batch.visitors_withdrawn],
        "scenes": [_scene(sc) for sc in batch.scenes],
        "counts": [_count(c) for c in batch.counts],
    }
    return msgpack.packb(doc, use_bin_type=True)


def encode_face(face: Face) -> bytes:
    """One face on its own (the store keeps the faces a resolver holds), without its crop."""
    doc = _face(face)
    doc["crop"] = None
    return msgpack.packb({"v": FORMAT_VERSION, "face": doc}, use_bin_type=True)


def decode_face(payload: bytes) -> Face:
    """Rebuild a face from :func:`encode_face` output; raise CodecError on anything else."""
    try:
        doc = msgpack.unpackb(payload, raw=False, strict_map_key=True, use_list=True)
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise CodecError(f"not a msgpack face: {exc}") from None
    if not isinstance(doc, dict) or doc.get("v") not in _READS or not isinstance(
            doc.get("face"), dict):
        raise CodecError("payload is not an encoded face")
    try:
        return _from_face(doc["face"])
    except KeyError as exc:
        raise CodecError(f"field {exc.args[0]!r} missing") from None


def _list(d: dict[str, Any], key: str) -> list[Any]:
    v = d[key]
    if not isinstance(v, list):
        raise CodecError(f"{key} must be a list")
    return v


def _maps(d: dict[str, Any], key: str) -> list[dict[str, Any]]:
    items = _list(d, key)
    if not all(isinstance(x, dict) for x in items):
        raise CodecError(f"{key} must be a list of maps")
    return items


def decode_batch(payload: bytes) -> Batch:
    """Rebuild a batch from :func:`encode_batch` output; raise CodecError on anything else."""
    try:
        doc = msgpack.unpackb(payload, raw=False, strict_map_key=True, use_list=True)
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise CodecError(f"not a msgpack batch: {exc}") from None
    if not isinstance(doc, dict):
        raise CodecError("payload is not a map")
    if doc.get("v") not in _READS:
        raise CodecError(f"unsupported batch format version {doc.get('v')!r}")
    try:
        pairs = _list(doc, "exemplars_dropped")
        created = _list(doc, "visitors_created")
        withdrawn = _list(doc, "visitors_withdrawn")
        if not all(isinstance(p, list) and len(p) == 2 for p in withdrawn):
            raise CodecError("visitors_withdrawn must hold [tenant, visitor_id] pairs")
        if not all(isinstance(p, list) and len(p) == 2 for p in pairs):
            raise CodecError("exemplars_dropped must hold [tenant, face_image_id] pairs")
        if not all(isinstance(c, list) and len(c) == 3 for c in created):
            raise CodecError("visitors_created must hold [tenant, visitor_id, ts] triples")
        return Batch(
            batch_id=_str(doc["batch_id"], "batch_id"),
            frames=[_from_frame(x) for x in _maps(doc, "frames")],
            faces=[_from_face(x) for x in _maps(doc, "faces")],
            sightings=[_from_sighting(x) for x in _maps(doc, "sightings")],
            rejected=[_from_rejected(x) for x in _maps(doc, "rejected")],
            dropped=[_from_dropped(x) for x in _maps(doc, "dropped")],
            exemplars_added=[_from_exemplar(x) for x in _maps(doc, "exemplars_added")],
            exemplars_dropped=[(_str(t, "tenant"), _str(f, "face_image_id")) for t, f in pairs],
            visitors_withdrawn=[(_str(t, "tenant"), _str(v, "visitor_id")) for t, v in withdrawn],
            visitors_created=[
                (_str(t, "tenant"), _str(v, "visitor_id"), _from_ts(ts)) for t, v, ts in created
            ],
            scenes=[_from_scene(x) for x in _maps(doc, "scenes")] if "scenes" in doc else [],
            counts=[_from_count(x) for x in _maps(doc, "counts")] if "counts" in doc else [],
        )
    except KeyError as exc:
        raise CodecError(f"field {exc.args[0]!r} missing") from None
