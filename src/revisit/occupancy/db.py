"""Occupancy data in the store's database: cameras' zones, locations' capacity, people
per frame, door-sign keys, alert rules and alerts (tables of migration 9).

Settings are JSON documents validated by their pydantic models on the way in and out, so
a setting the API accepted is exactly what the pipeline reads. Every change is audited
through the tenancy's log.
"""

from __future__ import annotations

import hashlib
import secrets
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel

from revisit.config.occupancy import STORED, CameraZones, LocationOccupancy
from revisit.occupancy.live import CameraCount, Occupancy, combine, occupancy
from revisit.records import DEFAULT_TENANT
from revisit.store.base import SightingStore
from revisit.tenancy.db import Tenancy, TenancyError


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _aware(ts: datetime) -> datetime:
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts


def _naive(ts: datetime) -> datetime:
    return ts.astimezone(UTC).replace(tzinfo=None) if ts.tzinfo else ts


@dataclass(frozen=True, slots=True)
class MinuteRow:
    """One minute of one location: people (mean over the minute's snapshots, cameras
    combined by the overlap rule; named zones summed over cameras) and the peak."""

    location_id: str
    minute: datetime
    zone: str
    people: float
    peak: float
    cameras: dict[str, float]  # each camera's mean people that minute


def all_camera_zones(store: SightingStore,
                     tenant: str | None = None) -> dict[tuple[str, str], CameraZones]:
    """Camera settings of every tenant (what the pipeline's zone book holds), or of one."""
    sql, params = "SELECT tenant, camera_id, config FROM occupancy_cameras", []
    if tenant is not None:
        sql, params = sql + " WHERE tenant = ?", [tenant]
    with store.read() as s:
        rows = s.execute(sql, params).fetchall()
    return {(t, c): CameraZones.model_validate_json(cfg, context=STORED) for t, c, cfg in rows}


def _split(key: str) -> tuple[str, str]:
    tenant, _, name = key.rpartition("/")
    return tenant or DEFAULT_TENANT, name


def apply_settings(store: SightingStore, settings: Any) -> None:
    """The configuration file's occupancy settings into the store (where the pipeline, CLI
    and API read them); unchanged ones are left alone, changed ones audited as ``config``."""
    occ = settings.occupancy
    if not occ.cameras and not occ.locations:
        return
    db = OccupancyDB(store, Tenancy(store))
    for key, zones in occ.cameras.items():
        tenant, cam = _split(key)
        if db.camera(tenant, cam) != zones:
            db.set_camera(tenant, cam, zones, actor="config")
    for key, cfg in occ.locations.items():
        tenant, loc = _split(key)
        if db.location(tenant, loc) != cfg:
            db.set_location(tenant, loc, cfg, actor="config")


class OccupancyDB:
    def __init__(self, store: SightingStore, tenancy: Tenancy) -> None:
        self.store = store
        self.tenancy = tenancy

    def _tenant(self, tenant: str) -> None:
        """The embedded default's tenant needs no registration; any other must exist."""
        if tenant != DEFAULT_TENANT:
            self.tenancy.require_tenant(tenant)

    def _place(self, tenant: str, what: str, key: str, actor: str) -> None:
        """A registered tenant's settings name registered places (an unknown id is a
        typo, not a new store); the embedded default and the configuration file, which may
        set a camera up before its first frame, are not held to the registry."""
        if tenant == DEFAULT_TENANT or actor == "config":
            return
        found = (self.tenancy.camera(tenant, key) if what == "camera"
                 else self.tenancy.location(tenant, key))
        if found is None:
            raise TenancyError(f"unknown {what} {key!r} in tenant {tenant} (register it first: "
                               f"revisit admin add-{what})")

    def _rows(self, sql: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        with self.store.read() as s:
            return list(s.execute(sql, list(params)).fetchall())

    # -- settings -----------------------------------------------------------------------
    def _put(self, table: str, column: str, tenant: str, key: str, cfg: BaseModel,
             actor: str, action: str) -> None:
        """Create or replace one settings document, audited."""
        self._tenant(tenant)
        self._place(tenant, "camera" if column == "camera_id" else "location", key, actor)
        with self.store.transaction() as s:
            s.execute(f"INSERT INTO {table} (tenant, {column}, config, updated_at) "
                      f"VALUES (?, ?, ?, ?) ON CONFLICT (tenant, {column}) DO UPDATE SET "
                      "config = excluded.config, updated_at = excluded.updated_at",
                      [tenant, key, cfg.model_dump_json(), _now()])
        self.tenancy.audit(tenant, actor, action, {column: key, **cfg.model_dump()})

    def set_camera(self, tenant: str, camera_id: str, zones: CameraZones,
                   actor: str = "cli") -> None:
        self._put("occupancy_cameras", "camera_id", tenant, camera_id, zones, actor,
                  "occupancy.camera.put")

    def camera(self, tenant: str, camera_id: str) -> CameraZones | None:
        rows = self._rows("SELECT config FROM occupancy_cameras WHERE tenant = ? "
                          "AND camera_id = ?", (tenant, camera_id))
        return CameraZones.model_validate_json(rows[0][0], context=STORED) if rows else None

    def all_cameras(self, tenant: str | None = None) -> dict[tuple[str, str], CameraZones]:
        return all_camera_zones(self.store, tenant)

    def set_location(self, tenant: str, location_id: str, cfg: LocationOccupancy,
                     actor: str = "cli") -> None:
        self._put("occupancy_locations", "location_id", tenant, location_id, cfg, actor,
                  "occupancy.location.put")

    def location(self, tenant: str, location_id: str) -> LocationOccupancy | None:
        rows = self._rows("SELECT config FROM occupancy_locations WHERE tenant = ? "
                          "AND location_id = ?", (tenant, location_id))
        return LocationOccupancy.model_validate_json(rows[0][0]) if rows else None

    def locations(self, tenant: str) -> dict[str, LocationOccupancy]:
        return {loc: LocationOccupancy.model_validate_json(cfg) for loc, cfg in self._rows(
            "SELECT location_id, config FROM occupancy_locations WHERE tenant = ? "
            "ORDER BY location_id", (tenant,))}

    def _counting_cameras(self, tenant: str, location_id: str) -> dict[str, CameraZones]:
        """Counting cameras of a location: where the registry puts the camera (moved, or
        yet to send its first frame), else where its first frames came from (the embedded
        default's cameras need no registration)."""
        rows = self._rows(
            "SELECT o.camera_id, o.config FROM occupancy_cameras o "
            "LEFT JOIN tenancy_cameras r ON r.tenant = o.tenant AND r.camera_id = o.camera_id "
            "LEFT JOIN cameras c ON c.tenant = o.tenant AND c.camera_id = o.camera_id "
            "WHERE o.tenant = ? AND coalesce(r.location_id, c.location_id) = ?",
            (tenant, location_id))
        out = {cam: CameraZones.model_validate_json(cfg, context=STORED) for cam, cfg in rows}
        return {cam: z for cam, z in out.items() if z.counting}

    def check_rule_place(self, tenant: str, location_id: str, zone: str) -> None:
        """What an alert rule watches must exist: the location's capacity (rules need its
        freshness setting), and a named zone on one of its counting cameras (a rule on a
        zone nobody defined reads 0 for ever and can never fire)."""
        if self.location(tenant, location_id) is None:
            raise TenancyError(f"location {location_id!r} has no capacity set: set it first "
                               "(revisit admin set-capacity, PUT /v1/locations/{id}/capacity);"
                               " its freshness setting decides when a count is current")
        if zone:
            named = sorted({n for z in self._counting_cameras(tenant, location_id).values()
                            for n in z.named})
            if zone not in named:
                raise TenancyError(f"zone {zone!r} is not a named zone of a counting camera at "
                                   f"{location_id} (named: {', '.join(named) or 'none'}; "
                                   "define it first: revisit admin set-zones)")

    # -- now ----------------------------------------------------------------------------
    def live(self, tenant: str, location_id: str, now: datetime | None = None) -> Occupancy:
        """The location's occupancy now (``now``: the wall clock unless given)."""
        cfg = self.location(tenant, location_id)
        if cfg is None:
            raise TenancyError(f"location {location_id!r} has no capacity set "
                               "(revisit admin set-capacity, PUT "
                               "/v1/locations/{id}/capacity)")
        now = _aware(now or datetime.now(UTC))
        cams = self._counting_cameras(tenant, location_id)
        since = _naive(now) - timedelta(days=1)
        rows = self._rows(
            "SELECT p.camera_id, p.image_id, p.zone, p.ts, p.count FROM people_counts p JOIN ("
            " SELECT camera_id, max(ts) AS ts FROM people_counts WHERE tenant = ? "
            " AND location_id = ? AND zone = '' AND ts >= ? AND ts <= ? GROUP BY camera_id"
            ") m ON p.camera_id = m.camera_id AND p.ts = m.ts "
            "WHERE p.tenant = ? AND p.location_id = ?",
            (tenant, location_id, since, _naive(now), tenant, location_id))
        # one frame per camera, even if two of its frames share the newest time (a burst,
        # a camera's clock in whole seconds): its counting zone and named zones both come
        # from that frame, so a queue is not counted once per frame
        frame: dict[str, str] = {}
        for cam, image, zone, _, _ in rows:
            if cam in cams and zone == "":
                frame[cam] = max(frame.get(cam, image), image)
        newest: dict[str, CameraCount] = {}
        zones: dict[str, dict[str, float]] = defaultdict(dict)  # camera -> zone -> people
        for cam, image, zone, ts, count in rows:
            if frame.get(cam) != image:
                continue
            # counts are stored to 2 decimals in a REAL column: DuckDB hands back its float32
            # (4.9 reads 4.900000095), which would tip a % over a level or a rule's line
            people = round(float(count), 2)
            if zone == "":
                newest[cam] = CameraCount(cam, cams[cam].overlap_group or cam, people,
                                          _aware(ts))
            else:
                zones[cam][zone] = people
        return occupancy(location_id, cfg, len(cams), list(newest.values()), dict(zones), now)

    # -- history ------------------------------------------------------------------------
    def history(self, tenant: str, ts_from: datetime, ts_to: datetime,
                locations: Iterable[str] = ()) -> list[MinuteRow]:
        """Per minute and location: the location's people ("" zone) by the overlap rule,
        and each named zone summed over cameras."""
        # a camera with no snapshot in a minute (one every 90 s, or out of step with the
        # others) still holds the people it last saw, as in the live answer, while that is
        # younger than the location's stale_after_s: else a minute one camera of two
        # missed would read that camera's area empty
        fresh_s = {loc: cfg.stale_after_s for loc, cfg in self.locations(tenant).items()}
        default_s = LocationOccupancy.model_fields["stale_after_s"].default
        # snapshots from before the range are read too (as far back as any of them can
        # still be held), so the first minutes hold what a camera saw just before the
        # start: a minute reads the same whatever range it is asked in
        back = timedelta(seconds=max([default_s, *fresh_s.values()]), minutes=1)
        locs = list(locations)
        where = "tenant = ? AND ts >= ? AND ts < ?"
        params: list[Any] = [_naive(ts_from), tenant, _naive(ts_from) - back, _naive(ts_to)]
        if locs:
            where += " AND location_id IN (SELECT unnest(?::VARCHAR[]))"
            params.append(locs)
        rows = self._rows(
            "SELECT location_id, camera_id, zone, date_trunc('minute', ts) AS m, ts < ? AS "
            f"before, avg(count), max(count) FROM people_counts WHERE {where} "
            "GROUP BY location_id, camera_id, zone, m, before ORDER BY m", params)
        groups = {k: z.overlap_group or k[1] for k, z in self.all_cameras(tenant).items()}
        per: dict[tuple[str, datetime, str], list[tuple[str, float, float]]] = defaultdict(list)
        last: dict[tuple[str, str], dict[str, tuple[datetime, float]]] = defaultdict(dict)
        for loc, cam, zone, minute, before, mean, peak in rows:
            if before:  # the newest before the range wins (rows come in time order)
                last[(loc, zone)][cam] = (minute, float(mean))
            else:
                per[(loc, minute, zone)].append((cam, float(mean), float(peak)))
        out = []
        for (loc, minute, zone), cams in sorted(per.items()):
            seen = last[(loc, zone)]
            own = {c for c, _, _ in cams}
            held = [(c, m, m) for c, (at, m) in sorted(seen.items()) if c not in own
                    and (minute - at).total_seconds() <= fresh_s.get(loc, default_s)]
            seen.update({c: (minute, m) for c, m, _ in cams})
            every = cams + held
            if zone == "":
                mean = combine(CameraCount(c, groups.get((tenant, c), c), m, minute)
                               for c, m, _ in every)
                peak = combine(CameraCount(c, groups.get((tenant, c), c), p, minute)
                               for c, _, p in every)
            else:
                mean, peak = sum(m for _, m, _ in every), sum(p for _, _, p in every)
            out.append(MinuteRow(loc, _aware(minute), zone, mean, peak,
                                 {c: round(m, 2) for c, m, _ in sorted(cams)}))
        return out

    # -- door signs ---------------------------------------------------------------------
    def create_display_key(self, tenant: str, location_id: str, actor: str = "cli") -> tuple[str, str]:
        """A read-only key showing one location's occupancy: (key id, secret)."""
        self._tenant(tenant)
        self._place(tenant, "location", location_id, actor)
        secret = "rvd_" + secrets.token_urlsafe(24)
        key_id = "dk_" + secrets.token_hex(4)
        with self.store.transaction() as s:
            s.execute("INSERT INTO display_keys (key_hash, key_id, tenant, location_id, "
                      "created_at) VALUES (?, ?, ?, ?, ?)",
                      [hashlib.sha256(secret.encode()).hexdigest(), key_id, tenant,
                       location_id, _now()])
        self.tenancy.audit(tenant, actor, "occupancy.display_key.create",
                           {"key_id": key_id, "location_id": location_id})
        return key_id, secret

    def display_key(self, secret: str) -> tuple[str, str] | None:
        """(tenant, location id) a display key shows, or None."""
        rows = self._rows("SELECT tenant, location_id FROM display_keys WHERE key_hash = ? "
                          "AND revoked_at IS NULL", (hashlib.sha256(secret.encode()).hexdigest(),))
        return (rows[0][0], rows[0][1]) if rows else None

    def revoke_display_key(self, tenant: str, key_id: str, actor: str = "cli") -> None:
        with self.store.transaction() as s:
            n = s.count("UPDATE display_keys SET revoked_at = ? WHERE tenant = ? AND key_id = ? "
                        "AND revoked_at IS NULL", [_now(), tenant, key_id])
        if not n:
            raise TenancyError(f"no active display key {key_id!r} in tenant {tenant}")
        self.tenancy.audit(tenant, actor, "occupancy.display_key.revoke", {"key_id": key_id})
