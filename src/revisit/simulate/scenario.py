"""Build a multi-store, multi-day CCTV scenario with known ground truth.

Why: counting accuracy can only be measured against a truth, and no public data set has
the same people walking into the same shops over weeks. So real faces (one folder per
person) are pasted into real mall CCTV frames on a plausible schedule:

- most visitors come once; regulars return to their home store every few days at a
  habitual hour (sometimes twice a day); some visitors shop at two or three stores;
- a visit lasts minutes and is seen by one to three cameras of the store, each in a run
  of consecutive snapshots (one every ``snapshot_interval_s``); people share frames;
- snapshots only fall in opening hours; a few empty snapshots are mixed in;
- different visits of one person use different photos of that person where there are
  several (regulars are drawn preferentially from people with >= 2 photos).

Output: ``frames/…/*.jpg``, ``manifest.jsonl`` (the ingest format) and ``truth.json``
(see :mod:`revisit.simulate.truth`).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np

from revisit.simulate.render import FrameLook, Paste, render_frame
from revisit.visits import DEFAULT_VISIT_GAP, visits_per_location

IMAGE_EXTS = (".jpg", ".jpeg", ".png")


def shared_data_dir() -> Path:
    """``$REVISIT_SHARED_DATA`` or ``<repo>/../shared/data``."""
    env = os.environ.get("REVISIT_SHARED_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[3].parent / "shared" / "data"


@dataclass(frozen=True, slots=True)
class ScenarioSpec:
    """What to simulate. Defaults: a month of 20 stores with 3 cameras, 500 visitors."""

    stores: int = 20
    cameras_per_store: int = 3
    days: int = 30
    visitors: int = 500
    seed: int = 1
    start: date = date(2024, 1, 1)
    utc_offset_minutes: int = 60  # local time of the stores; timestamps carry this offset
    open_hour: int = 9
    close_hour: int = 21
    snapshot_interval_s: int = 15
    regular_share: float = 0.25  # come back to their home store over days and weeks
    multi_store_share: float = 0.10  # shop at 2-3 stores
    face_height: tuple[int, int] = (40, 120)  # face (brow to chin) height in frame pixels
    visit_gap_min: int = int(DEFAULT_VISIT_GAP.total_seconds() // 60)  # recorded in the truth
    empty_frame_share: float = 0.05  # extra snapshots with nobody pasted in
    companion_share: float = 0.25  # of one-off visitors, who come with someone else
    tenant: str | None = None  # written to the manifest when set
    backgrounds: Path | None = None  # folder of CCTV frames; default shared mall frames
    workers: int = 2  # rendering processes (1 = in-process)
    hard: bool = False  # what real cameras add: pose, motion, occlusion, dim frames (HARD)

    def __post_init__(self) -> None:
        if self.stores < 1 or self.cameras_per_store < 1 or self.days < 1 or self.visitors < 1:
            raise ValueError("stores, cameras_per_store, days and visitors must be >= 1")
        if not 0 <= self.open_hour < self.close_hour <= 24:
            raise ValueError("need 0 <= open_hour < close_hour <= 24")
        lo, hi = self.face_height
        if not 16 <= lo <= hi <= 200:
            raise ValueError("face_height must satisfy 16 <= min <= max <= 200")
        if self.regular_share + self.multi_store_share > 1:
            raise ValueError("regular_share + multi_store_share must be <= 1")
        if self.snapshot_interval_s < 1:
            raise ValueError("snapshot_interval_s must be >= 1")

    @property
    def tz(self) -> timezone:
        return timezone(timedelta(minutes=self.utc_offset_minutes))

    @property
    def visit_gap(self) -> timedelta:
        return timedelta(minutes=self.visit_gap_min)


# ``--hard``: shares and ranges of each degradation (what real cameras add). Drawn from
# their own random stream, so they leave the default scenario as it is.
HARD_FACE_HEIGHT = (24, 80)
HARD = {
    "roll_sd": 8.0, "roll_max": 25.0,  # head tilt, degrees
    "turned_share": 0.5, "yaw_max": 40.0,  # turned heads
    "mirror_share": 0.5,  # the other side of the face
    "motion_share": 0.15, "motion_px": (2.0, 6.0),  # motion blur length
    "occluded_share": 0.1, "occlusion": (0.2, 0.35),  # scarf / mask over the lower face
    "dim_share": 0.2, "dim_gain": (0.45, 0.7),  # dim snapshots
    "noise": (4.0, 9.0),  # sensor noise sigma
    "jpeg": (30, 55),  # JPEG quality of hard cameras
}


@dataclass(slots=True)
class ScenarioSummary:
    out_dir: Path
    manifest: Path
    truth: Path
    frames: int
    faces: int
    visitors: int  # visitors seen at least once
    visits: int  # true visits (the report's rule) summed over visitors and stores
    seconds: float
    locations: list[str] = field(default_factory=list)


@dataclass(slots=True)
class _Person:
    visitor: str
    identity: str
    photos: list[Path]
    kind: str  # once | regular | multi
    stores: list[int]


@dataclass(slots=True)
class _FaceAt:
    person: int
    photo: str
    paste: Paste


@dataclass(slots=True)
class _FrameTask:
    index: int
    path: str
    look: FrameLook
    pastes: list[Paste]
    seed: int


def _list_people(faces_dir: Path) -> list[tuple[str, list[Path]]]:
    people = []
    for d in sorted(p for p in faces_dir.iterdir() if p.is_dir()):
        photos = sorted(f for f in d.iterdir() if f.suffix.lower() in IMAGE_EXTS)
        if photos:
            people.append((d.name, photos))
    if not people:
        raise ValueError(f"{faces_dir} has no person folders with photos")
    return people


def _list_backgrounds(spec: ScenarioSpec) -> list[Path]:
    folder = spec.backgrounds or shared_data_dir() / "mall" / "frames"
    files = sorted(f for f in Path(folder).iterdir() if f.suffix.lower() in IMAGE_EXTS)
    if not files:
        raise ValueError(f"no background frames in {folder}")
    return files


def _choose_people(spec: ScenarioSpec, rng: np.random.Generator, faces_dir: Path) -> list[_Person]:
    people = _list_people(faces_dir)
    n = spec.visitors
    if n > len(people):
        raise ValueError(f"{n} visitors asked but {faces_dir} has only {len(people)} people")
    n_reg = round(n * spec.regular_share)
    n_multi = round(n * spec.multi_store_share)
    kinds = ["regular"] * n_reg + ["multi"] * n_multi + ["once"] * (n - n_reg - n_multi)
    multi_photo = [i for i, (_, ph) in enumerate(people) if len(ph) >= 2]
    single = [i for i, (_, ph) in enumerate(people) if len(ph) < 2]
    rng.shuffle(multi_photo)
    rng.shuffle(single)
    returning = n_reg + n_multi
    # returning visitors take people with several photos first; one-off visitors take the rest
    pool_ret = multi_photo[:returning]
    rest = multi_photo[returning:] + single
    rng.shuffle(rest)
    need = returning - len(pool_ret)
    if need > 0:
        pool_ret, rest = pool_ret + rest[:need], rest[need:]
    chosen = pool_ret + rest[: n - returning]
    # store popularity: a few busy stores, a long tail (Zipf-like)
    pop = 1.0 / np.arange(1, spec.stores + 1) ** 0.6
    pop = pop[rng.permutation(spec.stores)]
    pop /= pop.sum()
    out = []
    for k, (idx, kind) in enumerate(zip(chosen, kinds, strict=True)):
        name, photos = people[idx]
        photos = list(photos)
        rng.shuffle(photos)
        if kind == "multi" and spec.stores >= 2:
            m = int(rng.integers(2, min(3, spec.stores) + 1))
            stores = [int(s) for s in rng.choice(spec.stores, size=m, replace=False, p=pop)]
        else:
            kind = "regular" if kind == "multi" else kind
            stores = [int(rng.choice(spec.stores, p=pop))]
        out.append(_Person(f"P{k + 1:04d}", name, photos, kind, stores))
    order = rng.permutation(len(out))
    return [out[i] for i in order]


def _plan_visits(
    spec: ScenarioSpec, p: _Person, rng: np.random.Generator
) -> list[tuple[int, int, float]]:
    """(store, day, local start hour) of each planned visit of one person."""
    open_h, close_h = spec.open_hour, spec.close_hour
    habit = rng.uniform(open_h + 0.5, close_h - 1.0)

    def hour(center: float | None = None) -> float:
        if center is None:  # lunch and after-work peaks over a flat base
            center = float(rng.choice([12.5, 18.0])) if rng.random() < 0.6 else None
        h = rng.uniform(open_h, close_h - 0.25) if center is None else rng.normal(center, 1.2)
        return float(np.clip(h, open_h, close_h - 0.25))

    visits: list[tuple[int, int, float]] = []
    if p.kind == "once":
        visits.append((p.stores[0], int(rng.integers(0, spec.days)), hour()))
    elif p.kind == "regular":
        period = rng.uniform(2.0, 10.0)
        day = float(rng.uniform(0, min(period, spec.days)))
        while day < spec.days:
            d = int(day)
            visits.append((p.stores[0], d, hour(habit)))
            if rng.random() < 0.1:  # a second trip the same day, well apart
                h2 = visits[-1][2] + rng.uniform(2.0, 6.0)
                if h2 < close_h - 0.25:
                    visits.append((p.stores[0], d, float(h2)))
            day += max(1.0, rng.normal(period, period * 0.3))
        if len(visits) < 2:  # a regular comes back at least once
            d = int(rng.integers(0, spec.days))
            visits.append((p.stores[0], d, hour()))
    else:
        n = int(rng.integers(2, 7))
        for _ in range(n):
            visits.append((int(rng.choice(p.stores)), int(rng.integers(0, spec.days)), hour()))
    return visits


def _damage_of(p: Paste) -> dict[str, float]:
    """What ``--hard`` did to one pasted face, for the truth file."""
    return {"roll": round(p.roll, 1), "yaw": round(p.yaw, 1), "mirror": float(p.mirror),
            "motion": round(p.motion, 1), "occlusion": round(p.occlusion, 2),
            "blur": round(p.blur_sigma, 2), "resolution": round(p.resolution, 2)}


def _hard_damage(rng: np.random.Generator) -> dict[str, Any]:
    """Pose and damage of one pasted face under ``--hard`` (see ``HARD``)."""
    turned = rng.random() < HARD["turned_share"]
    moving = rng.random() < HARD["motion_share"]
    occluded = rng.random() < HARD["occluded_share"]
    return {
        "roll": float(np.clip(rng.normal(0, HARD["roll_sd"]), -HARD["roll_max"], HARD["roll_max"])),
        "yaw": float(rng.uniform(-HARD["yaw_max"], HARD["yaw_max"])) if turned else 0.0,
        "mirror": bool(rng.random() < HARD["mirror_share"]),
        "motion": float(rng.uniform(*HARD["motion_px"])) if moving else 0.0,
        "motion_angle": float(rng.uniform(0, 180)),
        "occlusion": float(rng.uniform(*HARD["occlusion"])) if occluded else 0.0,
    }


def _camera_looks(spec: ScenarioSpec, backgrounds: list[Path], rng: np.random.Generator):  # type: ignore[no-untyped-def]
    """Per camera: its background frames, mirror, exposure, noise and JPEG quality (worse
    under ``--hard``, from a stream of its own)."""
    hrng = np.random.default_rng([spec.seed, 13])
    looks = {}
    n_bg = len(backgrounds)
    for s in range(spec.stores):
        for c in range(spec.cameras_per_store):
            start = int(rng.integers(0, n_bg))
            bgs = [str(backgrounds[(start + i) % n_bg]) for i in range(min(12, n_bg))]
            looks[(s, c)] = {
                "bgs": bgs,
                "flip": bool(rng.random() < 0.5),
                "gain": float(rng.uniform(0.8, 1.15)),
                "bias": float(rng.uniform(-15, 15)),
                "noise": float(rng.uniform(1.5, 5.0)),
                "quality": int(rng.integers(60, 91)),
                "phase": int(rng.integers(0, spec.snapshot_interval_s)),
            }
            if spec.hard:
                looks[(s, c)]["noise"] = float(hrng.uniform(*HARD["noise"]))
                looks[(s, c)]["quality"] = int(hrng.integers(HARD["jpeg"][0], HARD["jpeg"][1] + 1))
    return looks


def location_id(s: int) -> str:
    return f"S{s + 1:02d}"


def camera_id(s: int, c: int) -> str:
    return f"S{s + 1:02d}-C{c + 1}"


def build_scenario(faces_dir: Path | str, out_dir: Path | str, spec: ScenarioSpec) -> ScenarioSummary:
    """Generate the scenario into ``out_dir`` (created; existing frames are overwritten)."""
    t0 = time.perf_counter()
    faces_dir, out_dir = Path(faces_dir), Path(out_dir)
    rng = np.random.default_rng(spec.seed)
    people = _choose_people(spec, rng, faces_dir)
    backgrounds = _list_backgrounds(spec)
    cams = _camera_looks(spec, backgrounds, rng)
    tz = spec.tz
    interval = spec.snapshot_interval_s
    lo, hi = spec.face_height

    # -- faces per (store, camera, snapshot tick) ---------------------------------------
    frames: dict[tuple[int, int, int, int], list[_FaceAt]] = defaultdict(list)
    photo_turn = [0] * len(people)
    day_ticks = int((spec.close_hour - spec.open_hour) * 3600 // interval)

    hrng = np.random.default_rng([spec.seed, 11])  # --hard's own stream

    def add_face(pi: int, photo: str, key: tuple[int, int, int, int], fh: int) -> None:
        paste = Paste(
            photo=photo,
            face_height=fh,
            blur_sigma=float(rng.uniform(0.0, 1.0)),
            resolution=float(rng.uniform(0.55, 1.0)),
            gain=float(rng.uniform(0.75, 1.1)),
            **(_hard_damage(hrng) if spec.hard else {}),
        )
        frames[key].append(_FaceAt(pi, photo, paste))

    def next_photo(pi: int) -> str:
        p = people[pi]
        photo = str(p.photos[photo_turn[pi] % len(p.photos)])
        photo_turn[pi] += 1
        return photo

    # some one-off visitors come along with someone else (same store, same walk): that
    # is what puts several faces in one frame
    once = [i for i, p in enumerate(people) if p.kind == "once"]
    companions = set(once[: round(len(once) * spec.companion_share)]) if len(people) > 1 else set()
    tracks: list[list[tuple[int, int, int, int]]] = []
    for pi, p in enumerate(people):
        if pi in companions:
            continue
        for store, day, start_h in sorted(_plan_visits(spec, p, rng), key=lambda v: (v[1], v[2])):
            photo = next_photo(pi)
            dur_s = float(np.clip(rng.lognormal(np.log(12 * 60), 0.5), 180, 3600))
            v0 = (start_h - spec.open_hour) * 3600
            v1 = min(v0 + dur_s, (spec.close_hour - spec.open_hour) * 3600 - 1)
            n_cam = int(rng.integers(1, min(3, spec.cameras_per_store) + 1))
            cam_ids = rng.choice(spec.cameras_per_store, size=n_cam, replace=False)
            total = int(rng.integers(max(3, n_cam), 11))
            split = np.ones(n_cam, int) + rng.multinomial(total - n_cam, np.ones(n_cam) / n_cam)
            track = []
            for cam, k in zip(cam_ids, split, strict=True):
                phase = cams[(store, int(cam))]["phase"]
                first = int(np.ceil((v0 - phase) / interval))
                last_start = int(np.floor((v1 - phase) / interval)) - int(k) + 1
                t_start = int(rng.integers(first, max(first, last_start) + 1))
                base_h = rng.uniform(lo, hi)
                towards = rng.uniform(-0.06, 0.1)  # walking towards (+) or away from the camera
                for i in range(int(k)):
                    tick = t_start + i
                    if not 0 <= tick < day_ticks:
                        continue
                    fh = int(np.clip(round(base_h * (1 + towards * i)), lo, hi))
                    key = (day, store, int(cam), tick)
                    add_face(pi, photo, key, fh)
                    track.append(key)
            if track:
                tracks.append(track)
    for pi in sorted(companions):
        if not tracks:
            break
        track = tracks[int(rng.integers(0, len(tracks)))]
        photo = next_photo(pi)
        people[pi].stores = [track[0][1]]
        base_h = rng.uniform(lo, hi)
        for key in track:
            if len(frames[key]) < 4:
                add_face(pi, photo, key, int(np.clip(round(base_h * rng.uniform(0.9, 1.1)), lo, hi)))
    # a few snapshots with nobody in them (the store still sends them)
    n_empty = round(len(frames) * spec.empty_frame_share)
    for _ in range(n_empty):
        key = (
            int(rng.integers(0, spec.days)), int(rng.integers(0, spec.stores)),
            int(rng.integers(0, spec.cameras_per_store)), int(rng.integers(0, day_ticks)),
        )
        frames.setdefault(key, [])

    # -- frame tasks ---------------------------------------------------------------------
    out_dir.mkdir(parents=True, exist_ok=True)
    keys = sorted(frames, key=lambda k: (k[0], k[3] * interval + cams[(k[1], k[2])]["phase"], k[1], k[2]))
    tasks: list[_FrameTask] = []
    meta: list[dict[str, Any]] = []
    for idx, key in enumerate(keys):
        day, store, cam, tick = key
        c = cams[(store, cam)]
        ts = datetime.combine(spec.start + timedelta(days=day), datetime.min.time(), tzinfo=tz)
        ts += timedelta(hours=spec.open_hour, seconds=tick * interval + c["phase"])
        cid = camera_id(store, cam)
        image_id = f"{cid}-{ts.strftime('%Y%m%dT%H%M%S')}"
        rel = f"frames/{location_id(store)}/{cid}/{image_id}.jpg"
        fseed = int(rng.integers(0, 2**31))
        frng = np.random.default_rng(fseed)
        dim = float(hrng.uniform(*HARD["dim_gain"])) if spec.hard and \
            hrng.random() < HARD["dim_share"] else 1.0
        look = FrameLook(
            background=c["bgs"][int(frng.integers(0, len(c["bgs"])))],
            flip=c["flip"],
            gain=float(c["gain"] * frng.uniform(0.95, 1.05)) * dim,
            bias=float(c["bias"] + frng.uniform(-4, 4)),
            noise_sigma=c["noise"],
            jpeg_quality=int(np.clip(c["quality"] + frng.integers(-5, 6), 15 if spec.hard else 40, 95)),
        )
        faces = frames[key]
        tasks.append(_FrameTask(idx, str(out_dir / rel), look, [f.paste for f in faces], fseed))
        meta.append({
            "image": rel, "camera_id": cid, "location_id": location_id(store),
            "ts": ts.isoformat(), "image_id": image_id, "faces": faces, "look": look,
        })

    boxes = _render_all(tasks, spec.workers)

    # -- manifest and truth --------------------------------------------------------------
    manifest = out_dir / "manifest.jsonl"
    truth_frames = []
    seen: dict[int, list[tuple[str, datetime]]] = defaultdict(list)
    with manifest.open("w") as fh:
        for m, bxs in zip(meta, boxes, strict=True):
            line = {k: m[k] for k in ("image", "camera_id", "location_id", "ts", "image_id")}
            if spec.tenant:
                line["tenant"] = spec.tenant
            fh.write(json.dumps(line) + "\n")
            tfaces = []
            for f, b in zip(m["faces"], bxs, strict=True):
                p = people[f.person]
                tfaces.append({
                    "visitor": p.visitor, "identity": p.identity,
                    "photo": str(Path(f.photo).relative_to(faces_dir)),
                    "bbox": list(b), "face_height": f.paste.face_height,
                    **({"damage": _damage_of(f.paste)} if spec.hard else {}),
                })
                seen[f.person].append((m["location_id"], datetime.fromisoformat(m["ts"])))
            look = m["look"]
            truth_frames.append({**line, "faces": tfaces, **({"look": {
                "gain": round(look.gain, 2), "noise": look.noise_sigma, "jpeg": look.jpeg_quality,
            }} if spec.hard else {})})
    visitors = []
    total_visits = 0
    for pi, p in enumerate(people):
        if pi not in seen:
            continue
        vpl = visits_per_location(seen[pi], spec.visit_gap)
        total_visits += sum(vpl.values())
        visitors.append({
            "visitor": p.visitor, "identity": p.identity, "kind": p.kind,
            "stores": [location_id(s) for s in p.stores],
            "visits": vpl, "sightings": len(seen[pi]),
            "photos_used": len({f for f in p.photos[: photo_turn[pi]]}),
        })
    visitors.sort(key=lambda v: v["visitor"])
    spec_json = {k: (str(v) if isinstance(v, (date, Path)) else v) for k, v in asdict(spec).items()}
    truth = {
        "format": "revisit-truth/1",
        "spec": spec_json,
        "faces_dir": str(faces_dir),
        "tenant": spec.tenant or "default",
        "visit_gap_s": int(spec.visit_gap.total_seconds()),
        "locations": [location_id(s) for s in range(spec.stores)],
        "cameras": [camera_id(s, c) for s in range(spec.stores) for c in range(spec.cameras_per_store)],
        "visitors": visitors,
        "frames": truth_frames,
    }
    truth_path = out_dir / "truth.json"
    truth_path.write_text(json.dumps(truth, separators=(",", ":")))
    return ScenarioSummary(
        out_dir=out_dir, manifest=manifest, truth=truth_path, frames=len(truth_frames),
        faces=sum(len(f["faces"]) for f in truth_frames), visitors=len(visitors),
        visits=total_visits, seconds=time.perf_counter() - t0,
        locations=truth["locations"],
    )


def _render_one(task: _FrameTask) -> list[tuple[int, int, int, int]]:
    data, boxes = render_frame(task.look, task.pastes, np.random.default_rng(task.seed))
    path = Path(task.path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return boxes


def _render_all(tasks: list[_FrameTask], workers: int) -> list[list[tuple[int, int, int, int]]]:
    """Render every frame; in worker processes when it pays (each task is seeded, so the
    output does not depend on which process renders it)."""
    import cv2

    workers = max(1, min(workers, os.cpu_count() or 1))
    # render camera by camera (backgrounds and photos stay in each worker's cache), then
    # put the results back in time order
    order = sorted(range(len(tasks)), key=lambda i: (tasks[i].look.background, i))
    ordered = [tasks[i] for i in order]
    if workers == 1 or len(tasks) < 300:
        done = [_render_one(t) for t in ordered]
    else:
        # fork: no re-import of the caller's __main__ (scripts without a main guard work)
        ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        with ctx.Pool(workers, initializer=cv2.setNumThreads, initargs=(1,)) as pool:
            done = pool.map(_render_one, ordered, chunksize=32)
    out: list[list[tuple[int, int, int, int]]] = [[] for _ in tasks]
    for i, boxes in zip(order, done, strict=True):
        out[i] = boxes
    return out
