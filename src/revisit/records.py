"""The one vocabulary that flows through the pipeline.

Every stage takes and returns batches of these small records, so the embedded
default calls stages as plain functions and the distributed mode ships the same
records over a broker (see :mod:`revisit.queue.codec`).

- :class:`Frame`: one snapshot of one camera at one instant.
- :class:`Face`: one detection in a frame (crop, landmarks, quality, later its embedding).
- :class:`Sighting`: one face assigned to one visitor: the row the report is built from.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np

# Tenants, locations and cameras, everywhere they are named (admin, API, manifests, video):
# ids a report filter, a CSV cell and a URL path can carry as they are.
ID_RULE = "letters, digits, _ . -; at most 64 characters"
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$"
_ID = re.compile(ID_PATTERN)


def valid_id(value: str) -> bool:
    return _ID.fullmatch(value) is not None


def encodes(text: str) -> bool:
    """Text UTF-8 can hold (JSON's escapes allow a lone surrogate such as \\ud800)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


DEFAULT_TENANT = "default"


def content_id(data: bytes) -> str:
    """Stable id of an image from its bytes, used when the camera gives no image id."""
    return "I-" + hashlib.sha256(data).hexdigest()[:20]


def face_image_id(tenant: str, image_id: str, bbox: tuple[int, int, int, int]) -> str:
    """Deterministic id of one face crop: the same frame re-ingested yields the same ids.

    Determinism is what makes re-ingestion idempotent: the sighting's primary key is
    (tenant, face_image_id), so a retried frame overwrites nothing and adds nothing.
    """
    key = f"{tenant}\x1f{image_id}\x1f{bbox[0]},{bbox[1]},{bbox[2]},{bbox[3]}"
    return "F-" + hashlib.sha256(key.encode()).hexdigest()[:20]


# Exemplars an enrolment gave (revisit.known): ``enrol-<enrolment id>-<n>``. They last as
# long as the enrolment, whatever the retention and however many exemplars cameras add.
ENROLMENT_EXEMPLAR = "enrol-"


def enrolment_exemplar_id(enrolment_id: str, n: int) -> str:
    return f"{ENROLMENT_EXEMPLAR}{enrolment_id}-{n}"


def is_enrolment_exemplar(face_image_id: str) -> bool:
    return face_image_id.startswith(ENROLMENT_EXEMPLAR)


def as_utc(ts: datetime) -> datetime:
    """Normalise a timezone-aware timestamp to UTC; naive timestamps are rejected."""
    if ts.tzinfo is None or ts.utcoffset() is None:
        raise ValueError(f"timestamp {ts.isoformat()} has no UTC offset")
    return ts.astimezone(UTC)


def iso_utc(ts: datetime | None) -> str:
    """``2024-01-31T09:05:00Z``, the one way times are written out (naive values are UTC,
    as the store keeps them); empty for None."""
    if ts is None:
        return ""
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return ts.astimezone(UTC).isoformat().replace("+00:00", "Z")


@dataclass(slots=True)
class Frame:
    """One camera snapshot. ``data`` holds the encoded image (JPEG/PNG bytes) until decode.

    ``pixels`` is filled by the decode step (BGR uint8, as OpenCV reads it) and is never
    serialised: brokers carry the encoded bytes, which are ~10x smaller.
    """

    tenant: str
    camera_id: str
    location_id: str
    image_id: str
    ts: datetime
    data: bytes | None = None
    pixels: np.ndarray | None = None
    source: str = ""  # where it came from (file:line, URL), for error messages

    def __post_init__(self) -> None:
        self.ts = as_utc(self.ts)

    @property
    def key(self) -> str:
        return f"{self.tenant}/{self.image_id}"


@dataclass(slots=True)
class Face:
    """One detected face. Carries its frame's identity so it can travel alone.

    The quality gate's verdict (:mod:`revisit.vision.quality`): ``creatable`` faces may
    found a visitor; ``matchable`` ones count in deciding who their track is; the rest
    only follow their track (a sighting of the track's visitor, once it has one).
    """

    tenant: str
    camera_id: str
    location_id: str
    image_id: str
    ts: datetime
    face_image_id: str
    bbox: tuple[int, int, int, int]  # x, y, w, h in pixels of the original frame
    landmarks: np.ndarray  # (5, 2) float32: right eye, left eye, nose, mouth right, mouth left
    det_score: float
    quality: float  # 0..1, higher is better; combines size, detector score and sharpness
    creatable: bool = True
    crop: np.ndarray | None = None  # aligned crop (112x112 BGR uint8), dropped after embedding
    embedding: np.ndarray | None = None  # L2-normalised float32
    matchable: bool = True
    pose: tuple[float, float, float] = (0.0, 0.0, 0.0)  # yaw, pitch, roll in degrees
    faceness: float | None = None  # the embedder's face check (raw embedding norm)
    context: np.ndarray | None = None  # colours below the face (clothes), float32, sums to 1
    contrast: float | None = None  # grey-level standard deviation of the aligned crop
    sharpness: float | None = None  # variance of the Laplacian of the aligned crop
    zone: str = ""  # the camera's named zone the face is in (occupancy zones), if any

    @property
    def frame_key(self) -> str:
        return f"{self.tenant}/{self.image_id}"


@dataclass(slots=True)
class Sighting:
    """One face assigned to one visitor: the row the spec asks for, plus audit fields."""

    tenant: str
    face_id: str  # visitor id, e.g. V-0001A7
    face_image_id: str
    image_id: str
    camera_id: str
    location_id: str
    ts: datetime
    bbox: tuple[int, int, int, int]
    quality: float
    match_score: float  # cosine similarity to the visitor it joined; 1.0 for a new visitor
    new_visitor: bool = False
    embedding: np.ndarray | None = field(default=None, repr=False)  # kept for exemplar updates
    zone: str = ""  # the camera's named zone it was in (camera paths through zones)


@dataclass(slots=True)
class Rejected:
    """A frame (or manifest line) that could not be processed, with the reason."""

    source: str
    reason: str
    image_id: str = ""
    tenant: str = DEFAULT_TENANT
    code: str = ""  # a reason code (:data:`REJECT_REASONS`) where a summary counts them


# Why a frame was refused, where a summary counts them apart (stable codes).
EXPIRED = "retention"
REJECT_REASONS = {EXPIRED: "older than their tenant's retention"}


# Why a detected face became no sighting (stable codes: summaries, logs and the API use them).
TOO_SMALL = "too_small"
NOT_A_FACE = "not_a_face"
WEAK_TRACK = "weak_track"
TWIN = "twin"
STATIC = "static"
EXCLUDED = "excluded_zone"
DROP_REASONS = {
    TOO_SMALL: "too small to follow",
    NOT_A_FACE: "not a face (landmarks or embedding check)",
    WEAK_TRACK: "in tracks that matched nobody and could not found a visitor",
    TWIN: "alike a person in the same frame (a reflection or a picture of them)",
    STATIC: "the same face in the same place for a long time (a poster, screen or mannequin)",
    EXCLUDED: "inside an exclusion zone of its camera (a poster, a screen, the staff area)",
    EXPIRED: "held undecided until past their tenant's retention",
}


@dataclass(slots=True)
class Dropped:
    """A detected face that did not become a sighting, with the reason code
    (:data:`revisit.vision.quality.DROP_REASONS`) and details for ``-v`` listings."""

    tenant: str
    image_id: str
    bbox: tuple[int, int, int, int]
    reason: str
    detail: str = ""
    source: str = ""


@dataclass(slots=True)
class Exemplar:
    """A stored embedding of one visitor: what the face index searches against."""

    tenant: str
    visitor_id: str
    face_image_id: str
    embedding: np.ndarray
    quality: float
    ts: datetime


@dataclass(slots=True)
class Scene:
    """A camera's empty-scene background (vision/scenes): JPEG at reduced size; width and
    height are the camera's own, in which heatmap coordinates are given."""

    tenant: str
    camera_id: str
    width: int
    height: int
    jpeg: bytes
    frames: int  # samples the median was taken over
    ts: datetime  # newest sample


@dataclass(slots=True)
class PeopleCount:
    """People in one frame of a counting camera (occupancy): in its counting zone
    (``zone`` empty) or in one of its named zones. ``count`` is calibrated (a real
    number: the model's typical miss is corrected on average); ``raw`` is what the model
    found."""

    tenant: str
    camera_id: str
    location_id: str
    image_id: str
    ts: datetime
    zone: str
    count: float
    raw: int
    # where the counted people were (their counting points, image pixels): for heatmaps;
    # on the camera's own zone ("") only
    points: list[tuple[int, int]] = field(default_factory=list)


@dataclass(slots=True)
class SavedTrack:
    """A camera track still open when a run ended or a server stopped, as the store keeps
    it for the next start of the same data (identity/tracks.py): its motion, pooled
    embedding and counters in ``state``, never an image. ``held``: ids of its faces not
    decided yet (kept in ``held_faces``)."""

    tenant: str
    camera_id: str
    key: int
    visitor_id: str | None
    twin_of: str | None
    first_ts: datetime
    last_ts: datetime
    held: tuple[str, ...]
    state: bytes


@dataclass(slots=True)
class Batch:
    """The envelope every stage takes and returns: a camera batch and what became of it.

    Frames with no face still travel to the store, which marks them processed: that is
    what makes re-ingestion idempotent and the summary's frame count true.
    """

    batch_id: str
    frames: list[Frame] = field(default_factory=list)
    faces: list[Face] = field(default_factory=list)
    sightings: list[Sighting] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    dropped: list[Dropped] = field(default_factory=list)  # faces that became no sighting
    exemplars_added: list[Exemplar] = field(default_factory=list)
    exemplars_dropped: list[tuple[str, str]] = field(default_factory=list)  # (tenant, face_image_id)
    # visitors created by resolution: (tenant, visitor_id, first sighting ts)
    visitors_created: list[tuple[str, str, datetime]] = field(default_factory=list)
    # visitors found to be no person (a poster that founded one before it was known to be
    # static): (tenant, visitor_id), erased by the store stage after the batch is written
    visitors_withdrawn: list[tuple[str, str]] = field(default_factory=list)
    # cameras' empty-scene backgrounds renewed by this batch (vision/scenes)
    scenes: list[Scene] = field(default_factory=list)
    # people per frame and zone of counting cameras (occupancy/counting)
    counts: list[PeopleCount] = field(default_factory=list)
    # faces the resolver now holds (a camera track not decided yet), kept by the store
    # until a later batch releases them: (tenant, face_image_id) decided or dropped since
    held: list[Face] = field(default_factory=list)
    released: list[tuple[str, str]] = field(default_factory=list)
    # camera tracks kept open for the next start: the tenants whose stored tracks this
    # batch replaces (read back, or saved anew), and the tracks it saves
    tracks_cleared: list[str] = field(default_factory=list)
    tracks_saved: list[SavedTrack] = field(default_factory=list)
