"""Admin data in ``tenancy_*`` tables: tenants, keys, locations, cameras, groups, audit.

Secrets are never stored: a key is ``rvk_`` + 32 random bytes (URL-safe base64), and only
its SHA-256 is kept. A key that high in entropy needs no slow hash; lookup is by digest.
Every read takes the tenant, so nothing of tenant A is reachable with tenant B's key.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import duckdb

ROLES = ("admin", "analyst", "camera")
_SLUG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")

SCHEMA = """
CREATE TABLE IF NOT EXISTS tenancy_tenants (
    tenant VARCHAR PRIMARY KEY, name VARCHAR NOT NULL, retention_days INTEGER NOT NULL,
    created_at TIMESTAMP NOT NULL
);
CREATE TABLE IF NOT EXISTS tenancy_keys (
    key_hash VARCHAR PRIMARY KEY, key_id VARCHAR NOT NULL UNIQUE, tenant VARCHAR NOT NULL,
    role VARCHAR NOT NULL, cameras VARCHAR[] NOT NULL, name VARCHAR NOT NULL,
    created_at TIMESTAMP NOT NULL, revoked_at TIMESTAMP
);
CREATE TABLE IF NOT EXISTS tenancy_locations (
    tenant VARCHAR NOT NULL, location_id VARCHAR NOT NULL, name VARCHAR NOT NULL,
    timezone VARCHAR NOT NULL, PRIMARY KEY (tenant, location_id)
);
CREATE TABLE IF NOT EXISTS tenancy_cameras (
    tenant VARCHAR NOT NULL, camera_id VARCHAR NOT NULL, location_id VARCHAR NOT NULL,
    name VARCHAR NOT NULL, timezone VARCHAR NOT NULL, PRIMARY KEY (tenant, camera_id)
);
CREATE TABLE IF NOT EXISTS tenancy_groups (
    tenant VARCHAR NOT NULL, name VARCHAR NOT NULL, camera_id VARCHAR NOT NULL,
    PRIMARY KEY (tenant, name, camera_id)
);
CREATE SEQUENCE IF NOT EXISTS tenancy_audit_seq;
CREATE TABLE IF NOT EXISTS tenancy_audit (
    id BIGINT PRIMARY KEY DEFAULT nextval('tenancy_audit_seq'), ts TIMESTAMP NOT NULL,
    tenant VARCHAR NOT NULL, actor VARCHAR NOT NULL, action VARCHAR NOT NULL,
    detail VARCHAR NOT NULL
);
"""


class TenancyError(ValueError):
    """A request the admin data cannot satisfy (unknown tenant, bad timezone...)."""


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


def connection_for(store: object) -> duckdb.DuckDBPyConnection | None:
    """The DuckDB connection a store owns (None for other backends).

    DuckDB allows one writer process per file, so admin tables must go through the store's
    own connection. Uses a public ``connection`` attribute when the store has one.
    """
    con = getattr(store, "connection", None)
    return con if isinstance(con, duckdb.DuckDBPyConnection) else None


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _slug(value: str, what: str) -> str:
    if not _SLUG.match(value):
        raise TenancyError(
            f"{what} {value!r} is not valid (letters, digits, _ . -; at most 64 characters)"
        )
    return value


def _timezone(tz: str) -> str:
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise TenancyError(
            f"unknown timezone {tz!r} (use an IANA name like Europe/Berlin)"
        ) from None
    return tz


class Tenancy:
    """Admin data over a DuckDB connection shared with the store (``lock`` serialises use)."""

    def __init__(self, con: duckdb.DuckDBPyConnection, lock: threading.RLock | None = None) -> None:
        self._base = con
        self._local = threading.local()
        self.lock = lock or threading.RLock()
        with self.lock:
            self.con.execute(SCHEMA)

    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        """This thread's cursor on the shared connection (connections are not thread-safe)."""
        cur = getattr(self._local, "cur", None)
        if cur is None:
            cur = self._local.cur = self._base.cursor()
        return cur

    def _q(self, sql: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        with self.lock:
            return self.con.execute(sql, list(params)).fetchall()

    # -- tenants ----------------------------------------------------------------------
    def create_tenant(self, tenant: str, name: str = "", retention_days: int = 365) -> Tenant:
        _slug(tenant, "tenant")
        if not 1 <= retention_days <= 36500:
            raise TenancyError("retention days must be between 1 and 36500")
        if self.tenant(tenant) is not None:
            raise TenancyError(f"tenant {tenant!r} already exists")
        self._q(
            "INSERT INTO tenancy_tenants VALUES (?, ?, ?, ?)",
            (tenant, name or tenant, retention_days, _now()),
        )
        self.audit(tenant, "cli", "tenant.create", {"retention_days": retention_days})
        return self.require_tenant(tenant)

    def tenant(self, tenant: str) -> Tenant | None:
        rows = self._q("SELECT * FROM tenancy_tenants WHERE tenant = ?", (tenant,))
        return Tenant(*rows[0]) if rows else None

    def require_tenant(self, tenant: str) -> Tenant:
        t = self.tenant(tenant)
        if t is None:
            raise TenancyError(f"unknown tenant {tenant!r} (create it with `revisit admin add-tenant`)")
        return t

    def tenants(self) -> list[Tenant]:
        return [Tenant(*r) for r in self._q("SELECT * FROM tenancy_tenants ORDER BY tenant")]

    def set_retention(self, tenant: str, days: int) -> None:
        self.require_tenant(tenant)
        self._q("UPDATE tenancy_tenants SET retention_days = ? WHERE tenant = ?", (days, tenant))

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
        self._q(
            "INSERT INTO tenancy_keys VALUES (?, ?, ?, ?, ?, ?, ?, NULL)",
            (hash_key(secret), key_id, tenant, role, list(cams), name, _now()),
        )
        self.audit(tenant, actor, "key.create", {"key_id": key_id, "role": role,
                                                  "cameras": list(cams), "name": name})
        key = self.key(tenant, key_id)
        assert key is not None
        return key, secret

    def authenticate(self, secret: str) -> ApiKey | None:
        if not secret or len(secret) > 200:
            return None
        rows = self._q(
            "SELECT key_id, tenant, role, cameras, name, created_at, revoked_at "
            "FROM tenancy_keys WHERE key_hash = ? AND revoked_at IS NULL",
            (hash_key(secret),),
        )
        if not rows:
            return None
        r = rows[0]
        return ApiKey(r[0], r[1], r[2], tuple(r[3]), r[4], r[5], r[6])

    def key(self, tenant: str, key_id: str) -> ApiKey | None:
        rows = self._q(
            "SELECT key_id, tenant, role, cameras, name, created_at, revoked_at "
            "FROM tenancy_keys WHERE tenant = ? AND key_id = ?", (tenant, key_id),
        )
        if not rows:
            return None
        r = rows[0]
        return ApiKey(r[0], r[1], r[2], tuple(r[3]), r[4], r[5], r[6])

    def keys(self, tenant: str) -> list[ApiKey]:
        rows = self._q(
            "SELECT key_id, tenant, role, cameras, name, created_at, revoked_at "
            "FROM tenancy_keys WHERE tenant = ? ORDER BY created_at", (tenant,),
        )
        return [ApiKey(r[0], r[1], r[2], tuple(r[3]), r[4], r[5], r[6]) for r in rows]

    def revoke_key(self, tenant: str, key_id: str, actor: str = "cli") -> bool:
        if self.key(tenant, key_id) is None:
            return False
        self._q(
            "UPDATE tenancy_keys SET revoked_at = ? WHERE tenant = ? AND key_id = ?",
            (_now(), tenant, key_id),
        )
        self.audit(tenant, actor, "key.revoke", {"key_id": key_id})
        return True

    # -- locations and cameras ----------------------------------------------------------
    def add_location(
        self, tenant: str, location_id: str, name: str = "", timezone: str = "UTC",
        actor: str = "cli",
    ) -> Location:
        self.require_tenant(tenant)
        _slug(location_id, "location id")
        self._q(
            "INSERT OR REPLACE INTO tenancy_locations VALUES (?, ?, ?, ?)",
            (tenant, location_id, name or location_id, _timezone(timezone)),
        )
        self.audit(tenant, actor, "location.put", {"location_id": location_id, "name": name,
                                                   "timezone": timezone})
        return Location(location_id, name or location_id, timezone)

    def locations(self, tenant: str) -> list[Location]:
        rows = self._q(
            "SELECT location_id, name, timezone FROM tenancy_locations WHERE tenant = ? "
            "ORDER BY location_id", (tenant,),
        )
        return [Location(*r) for r in rows]

    def location(self, tenant: str, location_id: str) -> Location | None:
        rows = self._q(
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
        _slug(camera_id, "camera id")
        loc = self.location(tenant, location_id)
        if loc is None:
            raise TenancyError(f"unknown location {location_id!r} (add it first)")
        tz = _timezone(timezone or loc.timezone)
        self._q(
            "INSERT OR REPLACE INTO tenancy_cameras VALUES (?, ?, ?, ?, ?)",
            (tenant, camera_id, location_id, name or camera_id, tz),
        )
        self.audit(tenant, actor, "camera.put", {"camera_id": camera_id,
                                                 "location_id": location_id, "name": name})
        return Camera(camera_id, location_id, name or camera_id, tz)

    def camera(self, tenant: str, camera_id: str) -> Camera | None:
        rows = self._q(
            "SELECT camera_id, location_id, name, timezone FROM tenancy_cameras "
            "WHERE tenant = ? AND camera_id = ?", (tenant, camera_id),
        )
        return Camera(*rows[0]) if rows else None

    def cameras(self, tenant: str) -> list[Camera]:
        rows = self._q(
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
        _slug(name, "group name")
        cams = sorted(set(cameras))
        if not cams:
            raise TenancyError("a camera group needs at least one camera")
        for c in cams:
            if self.camera(tenant, c) is None:
                raise TenancyError(f"camera {c!r} is not registered in tenant {tenant!r}")
        with self.lock:
            self.con.execute("BEGIN")
            try:
                self.con.execute(
                    "DELETE FROM tenancy_groups WHERE tenant = ? AND name = ?", [tenant, name]
                )
                self.con.executemany(
                    "INSERT INTO tenancy_groups VALUES (?, ?, ?)", [[tenant, name, c] for c in cams]
                )
                self.con.execute("COMMIT")
            except BaseException:
                self.con.execute("ROLLBACK")
                raise
        self.audit(tenant, actor, "group.put", {"name": name, "cameras": cams})
        return cams

    def group_cameras(self, tenant: str, name: str) -> list[str] | None:
        rows = self._q(
            "SELECT camera_id FROM tenancy_groups WHERE tenant = ? AND name = ? ORDER BY camera_id",
            (tenant, name),
        )
        return [r[0] for r in rows] or None

    def groups(self, tenant: str) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for name, cam in self._q(
            "SELECT name, camera_id FROM tenancy_groups WHERE tenant = ? ORDER BY name, camera_id",
            (tenant,),
        ):
            out.setdefault(name, []).append(cam)
        return out

    # -- audit log ----------------------------------------------------------------------
    def audit(self, tenant: str, actor: str, action: str, detail: dict[str, Any]) -> None:
        self._q(
            "INSERT INTO tenancy_audit (ts, tenant, actor, action, detail) VALUES (?, ?, ?, ?, ?)",
            (_now(), tenant, actor, action, json.dumps(detail, default=str, sort_keys=True)),
        )

    def audit_log(self, tenant: str, limit: int = 100) -> list[dict[str, Any]]:
        rows = self._q(
            "SELECT id, ts, actor, action, detail FROM tenancy_audit WHERE tenant = ? "
            "ORDER BY id DESC LIMIT ?", (tenant, limit),
        )
        return [
            {"id": r[0], "ts": r[1].replace(tzinfo=UTC).isoformat(), "actor": r[2],
             "action": r[3], "detail": json.loads(r[4])}
            for r in rows
        ]
