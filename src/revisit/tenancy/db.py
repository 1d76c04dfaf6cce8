"""Admin data in ``tenancy_*`` tables of the store's database: tenants, keys, locations,
cameras, groups, audit log, shared secrets.

The tables live in the configured store (created by its migrations, read and written
through its transactions), so every API replica and worker on one PostgreSQL store sees
the same tenants and keys, and a key revoked through one replica is refused by all.

API key secrets are never stored: a key is ``rvk_`` + 32 random bytes (URL-safe base64),
and only its SHA-256 is kept. A key that high in entropy needs no slow hash; lookup is by
digest. Every read takes the tenant, so nothing of tenant A is reachable with tenant B's
key.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from revisit.records import ID_RULE, iso_utc, valid_id
from revisit.report.query import check_timezone
from revisit.store.base import SightingStore

ROLES = ("admin", "analyst", "camera")

class TenancyError(ValueError):
    """A request the admin data cannot satisfy (unknown tenant, bad timezone...)."""


DEFAULT_RETENTION_DAYS = 365  # of a new tenant, and of data under a tenant never registered


@dataclass(frozen=True, slots=True)
class Tenant:
    tenant: str
    name: str
    retention_days: int
    created_at: datetime


@dataclass(frozen=True, slots=True)
class ApiKey:
    key_id: str
    tenant: str
    role: str
    cameras: tuple[str, ...]
    name: str
    created_at: datetime
    revoked_at: datetime | None = None
    expires_at: datetime | None = None  # set by a rotation: works until then (naive UTC)
    sessions_after: datetime | None = None  # dashboard sessions signed in before: void

    def session_valid(self, signed_in: float) -> bool:
        """A dashboard session of this key signed in at ``signed_in`` (POSIX time)."""
        if not self.active():
            return False
        return self.sessions_after is None or \
            signed_in > self.sessions_after.replace(tzinfo=UTC).timestamp()

    def active(self, now: datetime | None = None) -> bool:
        """Not revoked and not past a rotation's grace period."""
        if self.revoked_at is not None:
            return False
        return self.expires_at is None or self.expires_at > (now or _now())

    @property
    def actor(self) -> str:
        return f"key:{self.key_id}"

    def may_post_for(self, camera_id: str) -> bool:
        return self.role == "camera" and camera_id in self.cameras


@dataclass(frozen=True, slots=True)
class Location:
    location_id: str
    name: str
    timezone: str


@dataclass(frozen=True, slots=True)
class Camera:
    camera_id: str
    location_id: str
    name: str
    timezone: str


def _valid_text(value: Any) -> Any:
    """``value`` with every string made encodable (lone surrogates replaced)."""
    if isinstance(value, str):
        return value if value.isascii() else value.encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, dict):
        return {_valid_text(k): _valid_text(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_valid_text(v) for v in value]
    return value


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def check_id(value: str, what: str) -> str:
    """``value`` if it is a valid id (tenants, locations, cameras everywhere they are
    named: admin, API, ``ingest-video``), else a TenancyError naming ``what``."""
    if not valid_id(value):
        raise TenancyError(f"{what} {value!r} is not valid ({ID_RULE})")
    return value


def _timezone(tz: str) -> str:
    try:
        return check_timezone(tz)
    except ValueError as exc:
        raise TenancyError(str(exc)) from None


class Tenancy:
    """Admin data in the store's database (any SQL store: DuckDB or PostgreSQL)."""

    def __init__(self, store: SightingStore) -> None:
        self.store = store
        # called with the action of every audit entry, once written (every change of
        # keys, cameras and tenants is audited)
        self.on_change: Callable[[str], None] | None = None

    def _rows(self, sql: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        with self.store.read() as s:
            return list(s.execute(sql, list(params)).fetchall())

    def _do(self, sql: str, params: Iterable[Any] = ()) -> None:
        with self.store.transaction() as s:
            s.execute(sql, list(params))

    def shared_secret(self, name: str) -> str:
        """A random secret every process using this store shares (made at first use),
        e.g. the key that signs dashboard sessions, so any replica accepts a session
        another one signed."""
        with self.store.transaction() as s:
            s.execute("INSERT INTO tenancy_secrets (name, secret, created_at) VALUES (?, ?, ?) "
                      "ON CONFLICT DO NOTHING",
                      [name, secrets.token_urlsafe(32), _now()])
            row = s.execute("SELECT secret FROM tenancy_secrets WHERE name = ?",
                            [name]).fetchone()
        return str(row[0])

    # -- tenants ----------------------------------------------------------------------
    def create_tenant(self, tenant: str, name: str = "",
                      retention_days: int = DEFAULT_RETENTION_DAYS,
                      actor: str = "cli") -> Tenant:
        check_id(tenant, "tenant")
        if not 1 <= retention_days <= 36500:
            raise TenancyError("retention days must be between 1 and 36500")
        if self.tenant(tenant) is not None:
            raise TenancyError(f"tenant {tenant!r} already exists")
        self._do(
            "INSERT INTO tenancy_tenants (tenant, name, retention_days, created_at) "
            "VALUES (?, ?, ?, ?)",
            (tenant, name or tenant, retention_days, _now()),
        )
        self.audit(tenant, actor, "tenant.create", {"retention_days": retention_days})
        return self.require_tenant(tenant)

    def tenant(self, tenant: str) -> Tenant | None:
        rows = self._rows("SELECT * FROM tenancy_tenants WHERE tenant = ?", (tenant,))
        return Tenant(*rows[0]) if rows else None

    def require_tenant(self, tenant: str) -> Tenant:
        t = self.tenant(tenant)
        if t is None:
            raise TenancyError(f"unknown tenant {tenant!r} (create it with `revisit admin add-tenant`)")
        return t

    def tenants(self) -> list[Tenant]:
        return [Tenant(*r) for r in self._rows("SELECT * FROM tenancy_tenants ORDER BY tenant")]

    def set_retention(self, tenant: str, days: int, actor: str = "cli") -> None:
        self.require_tenant(tenant)
        if not 1 <= days <= 36500:
            raise TenancyError("retention days must be between 1 and 36500")
        self._do("UPDATE tenancy_tenants SET retention_days = ? WHERE tenant = ?", (days, tenant))
        self.audit(tenant, actor, "tenant.retention", {"retention_days": days})

    def rename_tenant(self, tenant: str, name: str, actor: str = "cli") -> None:
        self.require_tenant(tenant)
        self._do("UPDATE tenancy_tenants SET name = ? WHERE tenant = ?", (name or tenant, tenant))
        self.audit(tenant, actor, "tenant.rename", {"name": name})

    # -- keys -------------------------------------------------------------------------
    def create_key(
        self, tenant: str, role: str, cameras: Iterable[str] = (), name: str = "",
        actor: str = "cli",
    ) -> tuple[ApiKey, str]:
        """A new key; returns (key, secret). The secret is shown once and never stored."""
        self.require_tenant(tenant)
        if role not in ROLES:
            raise TenancyError(f"role {role!r} is not one of {', '.join(ROLES)}")
        cams = tuple(sorted(set(cameras)))
        if role == "camera":
            if not cams:
                raise TenancyError("a camera key needs at least one camera")
            for c in cams:
                if self.camera(tenant, c) is None:
                    raise TenancyError(f"camera {c!r} is not registered in tenant {tenant!r}")
        elif cams:
            raise TenancyError("only camera keys are bound to cameras")
        secret = "rvk_" + secrets.token_urlsafe(32)
        key_id = secrets.token_hex(6)
        self._do(
            "INSERT INTO tenancy_keys (key_hash, key_id, tenant, role, cameras, name, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (hash_key(secret), key_id, tenant, role, list(cams), name, _now()),
        )
        self.audit(tenant, actor, "key.create", {"key_id": key_id, "role": role,
                                                  "cameras": list(cams), "name": name})
        key = self.key(tenant, key_id)
        assert key is not None
        return key, secret

    _KEY = ("SELECT key_id, tenant, role, cameras, name, created_at, revoked_at, expires_at, "
            "sessions_after FROM tenancy_keys ")

    @staticmethod
    def _key(r: tuple[Any, ...]) -> ApiKey:
        return ApiKey(r[0], r[1], r[2], tuple(r[3]), r[4], r[5], r[6], r[7], r[8])

    def end_sessions(self, tenant: str, key_id: str) -> None:
        """Void every dashboard session of the key signed in until now (sign-out)."""
        self._do("UPDATE tenancy_keys SET sessions_after = ? WHERE tenant = ? AND key_id = ?",
                 (_now(), tenant, key_id))

    def authenticate(self, secret: str) -> ApiKey | None:
        """The active key with this secret (not revoked, not past a rotation's grace)."""
        if not secret or len(secret) > 200:
            return None
        rows = self._rows(self._KEY + "WHERE key_hash = ? AND revoked_at IS NULL",
                          (hash_key(secret),))
        key = self._key(rows[0]) if rows else None
        return key if key is not None and key.active() else None

    def active_keys(self) -> dict[str, ApiKey]:
        """Every tenant's active keys by the hash of their secret (the accept process
        checks keys against this)."""
        rows = self._rows("SELECT key_hash, " + self._KEY.removeprefix("SELECT ")
                          + "WHERE revoked_at IS NULL")
        keys = {r[0]: self._key(r[1:]) for r in rows}
        return {h: k for h, k in keys.items() if k.active()}

    def key(self, tenant: str, key_id: str) -> ApiKey | None:
        rows = self._rows(self._KEY + "WHERE tenant = ? AND key_id = ?", (tenant, key_id))
        return self._key(rows[0]) if rows else None

    def keys(self, tenant: str) -> list[ApiKey]:
        rows = self._rows(self._KEY + "WHERE tenant = ? ORDER BY created_at", (tenant,))
        return [self._key(r) for r in rows]

    def _check_not_last_admin(self, key: ApiKey) -> None:
        if key.role != "admin" or not key.active():
            return
        others = [k for k in self.keys(key.tenant)
                  if k.role == "admin" and k.key_id != key.key_id and k.active()
                  and k.expires_at is None]
        if not others:
            raise TenancyError(
                f"key {key.key_id} is the last admin key of tenant {key.tenant!r}; create "
                "another admin key first, or rotate this one (`revisit admin rotate-key`)")

    def revoke_key(self, tenant: str, key_id: str, actor: str = "cli",
                   keep_an_admin: bool = True) -> bool:
        """Revoke a key (False: no such key). With ``keep_an_admin`` (the API), the
        tenant's last active admin key cannot be revoked: :class:`TenancyError`."""
        key = self.key(tenant, key_id)
        if key is None:
            return False
        if keep_an_admin:
            self._check_not_last_admin(key)
        self._do(
            "UPDATE tenancy_keys SET revoked_at = ? WHERE tenant = ? AND key_id = ?",
            (_now(), tenant, key_id),
        )
        self.audit(tenant, actor, "key.revoke", {"key_id": key_id})
        return True

    def rotate_key(self, tenant: str, key_id: str, grace: timedelta = timedelta(hours=24),
                   actor: str = "cli") -> tuple[ApiKey, str]:
        """A new key with the same role, cameras and name; the old one keeps working for
        ``grace`` (0: revoked now) and then stops. Returns (new key, its secret)."""
        old = self.key(tenant, key_id)
        if old is None or not old.active():
            raise TenancyError(f"no active key {key_id} in tenant {tenant!r}")
        if not timedelta(0) <= grace <= timedelta(days=90):
            raise TenancyError("the grace period must be between 0 and 90 days")
        new, secret = self.create_key(tenant, old.role, old.cameras, old.name, actor=actor)
        self._do("UPDATE tenancy_keys SET expires_at = ? WHERE tenant = ? AND key_id = ?",
                 (_now() + grace, tenant, key_id))
        self.audit(tenant, actor, "key.rotate", {"key_id": key_id, "new_key_id": new.key_id,
                                                 "grace_s": int(grace.total_seconds())})
        return new, secret

    # -- locations and cameras ----------------------------------------------------------
    def add_location(
        self, tenant: str, location_id: str, name: str = "", timezone: str = "UTC",
        actor: str = "cli",
    ) -> Location:
        self.require_tenant(tenant)
        check_id(location_id, "location id")
        tz = _timezone(timezone)
        with self.store.transaction() as s:
            old = s.execute("SELECT timezone FROM tenancy_locations WHERE tenant = ? "
                            "AND location_id = ?", [tenant, location_id]).fetchone()
            s.execute(
                "INSERT INTO tenancy_locations (tenant, location_id, name, timezone) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (tenant, location_id) "
                "DO UPDATE SET name = excluded.name, timezone = excluded.timezone",
                [tenant, location_id, name or location_id, tz])
            if old is not None and old[0] != tz:
                # cameras that took the location's zone (added without one) follow it
                s.execute("UPDATE tenancy_cameras SET timezone = ? WHERE tenant = ? AND "
                          "location_id = ? AND timezone = ?", [tz, tenant, location_id, old[0]])
        self.audit(tenant, actor, "location.put", {"location_id": location_id, "name": name,
                                                   "timezone": timezone})
        return Location(location_id, name or location_id, timezone)

    def locations(self, tenant: str) -> list[Location]:
        rows = self._rows(
            "SELECT location_id, name, timezone FROM tenancy_locations WHERE tenant = ? "
            "ORDER BY location_id", (tenant,),
        )
        return [Location(*r) for r in rows]

    def location_names(self, tenant: str) -> dict[str, str]:
        """location id -> display name (the id when none was given), for reports."""
        return {loc.location_id: loc.name or loc.location_id for loc in self.locations(tenant)}

    def unknown_places(self, tenant: str, locations: Iterable[str],
                       cameras: Iterable[str]) -> list[str]:
        """Filter ids that name no place of the tenant (neither registered nor seen in its
        sightings), as messages: a report filtered on a typo must not look empty."""
        from revisit.store.summary import known_places

        with self.store.read() as s:
            seen_cams, seen_locs = known_places(s, tenant)
        locs = seen_locs | {x.location_id for x in self.locations(tenant)}
        cams = seen_cams | {c.camera_id for c in self.cameras(tenant)}
        return ([f"location {x!r} is not a location of tenant {tenant!r}"
                 for x in locations if x not in locs]
                + [f"camera {x!r} is not a camera of tenant {tenant!r}"
                   for x in cameras if x not in cams])

    def report_filter(self, tenant: str, locations: tuple[str, ...], cameras: tuple[str, ...],
                      group: str = "") -> tuple[str, ...]:
        """The cameras a report filters on: ``cameras`` plus the members of ``group``.
        Raises TenancyError naming a location, camera or group the tenant does not have."""
        if problems := self.unknown_places(tenant, locations, cameras):
            raise TenancyError("; ".join(problems))
        if not group:
            return cameras
        members = self.group_cameras(tenant, group)
        if members is None:
            raise TenancyError(f"camera group {group!r} is not a group of tenant {tenant!r}")
        return tuple(sorted(set(cameras) | set(members)))

    def location(self, tenant: str, location_id: str) -> Location | None:
        rows = self._rows(
            "SELECT location_id, name, timezone FROM tenancy_locations "
            "WHERE tenant = ? AND location_id = ?", (tenant, location_id),
        )
        return Location(*rows[0]) if rows else None

    def add_camera(
        self, tenant: str, camera_id: str, location_id: str, name: str = "",
        timezone: str | None = None, actor: str = "cli",
    ) -> Camera:
        """Register a camera at a location (the location's timezone unless given)."""
        self.require_tenant(tenant)
        check_id(camera_id, "camera id")
        loc = self.location(tenant, location_id)
        if loc is None:
            raise TenancyError(f"unknown location {location_id!r} (add it first)")
        tz = _timezone(timezone or loc.timezone)
        self._do(
            "INSERT INTO tenancy_cameras (tenant, camera_id, location_id, name, timezone) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (tenant, camera_id) "
            "DO UPDATE SET location_id = excluded.location_id, name = excluded.name, "
            "timezone = excluded.timezone",
            (tenant, camera_id, location_id, name or camera_id, tz),
        )
        self.audit(tenant, actor, "camera.put", {"camera_id": camera_id,
                                                 "location_id": location_id, "name": name})
        return Camera(camera_id, location_id, name or camera_id, tz)

    def camera(self, tenant: str, camera_id: str) -> Camera | None:
        rows = self._rows(
            "SELECT camera_id, location_id, name, timezone FROM tenancy_cameras "
            "WHERE tenant = ? AND camera_id = ?", (tenant, camera_id),
        )
        return Camera(*rows[0]) if rows else None

    def cameras_by_id(self, tenant: str, camera_ids: Iterable[str]) -> dict[str, Camera]:
        """The registered ones of ``camera_ids``, in one query (a batch's cameras)."""
        ids = sorted(set(camera_ids))
        if not ids:
            return {}
        rows = self._rows(
            "SELECT camera_id, location_id, name, timezone FROM tenancy_cameras "
            f"WHERE tenant = ? AND camera_id IN ({', '.join('?' * len(ids))})", (tenant, *ids),
        )
        return {r[0]: Camera(*r) for r in rows}

    def cameras(self, tenant: str) -> list[Camera]:
        rows = self._rows(
            "SELECT camera_id, location_id, name, timezone FROM tenancy_cameras "
            "WHERE tenant = ? ORDER BY camera_id", (tenant,),
        )
        return [Camera(*r) for r in rows]

    # -- camera groups ------------------------------------------------------------------
    def set_group(
        self, tenant: str, name: str, cameras: Iterable[str], actor: str = "cli"
    ) -> list[str]:
        """Create or replace a named set of cameras (every camera must be registered)."""
        self.require_tenant(tenant)
        check_id(name, "group name")
        cams = sorted(set(cameras))
        if not cams:
            raise TenancyError("a camera group needs at least one camera")
        for c in cams:
            if self.camera(tenant, c) is None:
                raise TenancyError(f"camera {c!r} is not registered in tenant {tenant!r}")
        with self.store.transaction() as s:
            s.execute("DELETE FROM tenancy_groups WHERE tenant = ? AND name = ?", [tenant, name])
            s.execute("INSERT INTO tenancy_groups SELECT ?, ?, unnest(?::VARCHAR[])",
                      [tenant, name, cams])
        self.audit(tenant, actor, "group.put", {"name": name, "cameras": cams})
        return cams

    def group_cameras(self, tenant: str, name: str) -> list[str] | None:
        rows = self._rows(
            "SELECT camera_id FROM tenancy_groups WHERE tenant = ? AND name = ? ORDER BY camera_id",
            (tenant, name),
        )
        return [r[0] for r in rows] or None

    def groups(self, tenant: str) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for name, cam in self._rows(
            "SELECT name, camera_id FROM tenancy_groups WHERE tenant = ? ORDER BY name, camera_id",
            (tenant,),
        ):
            out.setdefault(name, []).append(cam)
        return out

    # -- audit log ----------------------------------------------------------------------
    def audit(self, tenant: str, actor: str, action: str, detail: dict[str, Any]) -> None:
        """One entry. Text that is not valid Unicode (a lone surrogate someone managed to
        send) is stored with "?" in its place, so the log always reads back."""
        text = json.dumps(_valid_text(detail), default=str, sort_keys=True)
        self._do(
            "INSERT INTO tenancy_audit (ts, tenant, actor, action, detail) VALUES (?, ?, ?, ?, ?)",
            (_now(), tenant, actor, action, text),
        )
        if self.on_change is not None:
            self.on_change(action)

    def audit_log(self, tenant: str, limit: int = 100) -> list[dict[str, Any]]:
        """Newest first. ``id`` counts this tenant's entries (1 = its first): the table's
        own sequence is shared by every tenant and would show how busy the others are."""
        rows = self._rows(
            "SELECT n, ts, actor, action, detail FROM (SELECT row_number() OVER (ORDER BY id) "
            "AS n, ts, actor, action, detail FROM tenancy_audit WHERE tenant = ?) AS own "
            "ORDER BY n DESC LIMIT ?", (tenant, limit),
        )
        return [
            {"id": r[0], "ts": iso_utc(r[1]), "actor": r[2],
             "action": r[3], "detail": json.loads(r[4])}
            for r in rows
        ]


LEGACY_FILE = "tenancy.duckdb"
_IMPORTED = "legacy-tenancy-imported"  # a tenancy_secrets row: the legacy file was imported
_LEGACY_TABLES = ("tenancy_tenants", "tenancy_keys", "tenancy_locations", "tenancy_cameras",
                  "tenancy_groups", "tenancy_audit")


def open_tenancy(store: SightingStore, data_dir: Path) -> Tenancy:
    """The tenancy of ``store``. Earlier versions kept it in ``<data>/tenancy.duckdb``
    beside a PostgreSQL store; such a file is copied into the store once (rows already
    there win; under a lock, and marked done in the same transaction, so processes
    starting at once, or one killed before the rename, import nothing twice) and renamed
    ``tenancy.duckdb.imported``."""
    tenancy = Tenancy(store)
    legacy = data_dir / LEGACY_FILE
    if legacy.is_file():
        import duckdb

        con = duckdb.connect(str(legacy), read_only=True)
        try:
            have = {r[0] for r in con.execute(
                "SELECT table_name FROM information_schema.tables").fetchall()}
            with store.transaction() as s:  # type: ignore[attr-defined]
                s.lock("tenancy-import")
                if s.execute("SELECT 1 FROM tenancy_secrets WHERE name = ?",
                             [_IMPORTED]).fetchone():
                    have = set()  # done by another process
                s.execute("INSERT INTO tenancy_secrets (name, secret, created_at) "
                          "VALUES (?, 'done', ?) ON CONFLICT DO NOTHING", [_IMPORTED, _now()])
                for table in (t for t in _LEGACY_TABLES if t in have):
                    cur = con.execute(f"SELECT * FROM {table}")
                    cols = [d[0] for d in cur.description or ()]
                    if table == "tenancy_audit":  # new ids from the store's sequence
                        cur = con.execute(f"SELECT {', '.join(c for c in cols if c != 'id')} "
                                          f"FROM {table} ORDER BY id")
                        cols = [c for c in cols if c != "id"]
                    marks = ", ".join("?" * len(cols))
                    for row in cur.fetchall():
                        s.execute(f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({marks}) "
                                  "ON CONFLICT DO NOTHING", list(row))
        finally:
            con.close()
        with contextlib.suppress(FileNotFoundError):  # renamed by the other process
            legacy.rename(legacy.with_name(LEGACY_FILE + ".imported"))
    return tenancy
