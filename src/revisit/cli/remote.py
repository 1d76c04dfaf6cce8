"""``revisit admin`` while ``revisit serve`` holds the store: through the running server.

DuckDB admits one process per file, so while the server runs, the CLI cannot open the
store. ``revisit serve`` writes ``<data>/serve.json`` (mode 0600: the server's address,
pid and operator token); the admin commands then go through the operator API
(:mod:`revisit.api.operator`) with the same effect and the same audit log. Reading that
file takes what reading the store's file takes, so it grants nothing new.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

from revisit.tenancy.db import ApiKey, Camera, Location, TenancyError, Tenant

SERVE_FILE = "serve.json"
LOCK_FILE = "serve.lock"
_HELD: list[IO[str]] = []  # locks this process keeps until it ends


@contextlib.contextmanager
def announced(data: Path, host: str, port: int, token: str) -> Iterator[None]:
    """Write ``<data>/serve.json`` for the lifetime of the server (removed at exit)."""
    path = data / SERVE_FILE
    local = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host
    payload = json.dumps({"url": f"http://{local}:{port}", "pid": os.getpid(),
                          "token": token})
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(payload)
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def hold_data(data: Path) -> bool:
    """Take ``<data>/serve.lock`` for the life of this process (False: another process
    holds it). In the embedded mode a server's spool, journal and resolver are its own: a
    second server on the same data directory would take the same uploads and give the
    same people other visitor ids."""
    data.mkdir(parents=True, exist_ok=True)
    fh = open(data / LOCK_FILE, "a")  # noqa: SIM115 (held until the process ends)
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fh.close()
        return False
    _HELD.append(fh)
    return True


def holder(data: Path) -> str:
    """Who serves ``data`` now, as serve.json says (for an error message)."""
    try:
        info = json.loads((data / SERVE_FILE).read_text())
        return f" (pid {int(info['pid'])}, {info['url']})"
    except (OSError, ValueError, KeyError, TypeError):
        return ""


def new_token() -> str:
    return "rvo_" + secrets.token_urlsafe(32)


def running_server(data: Path) -> RemoteTenancy | None:
    """The server announced in ``data``, if its process is alive and answers."""
    import httpx

    path = data / SERVE_FILE
    try:
        info = json.loads(path.read_text())
        os.kill(int(info["pid"]), 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    try:
        if httpx.get(f"{info['url']}/healthz", timeout=5).status_code != 200:
            return None
    except httpx.HTTPError:
        return None
    return RemoteTenancy(info["url"], info["token"])


class RemoteTenancy:
    """The part of :class:`revisit.tenancy.db.Tenancy` the admin CLI uses, over HTTP."""

    def __init__(self, url: str, token: str) -> None:
        import httpx

        self._http = httpx.Client(base_url=url, timeout=60,
                                  headers={"Authorization": f"Bearer {token}"})

    def _call(self, method: str, path: str, tenant: str | None = None, **kw: Any) -> Any:
        headers = {"X-Revisit-Tenant": tenant} if tenant else {}
        r = self._http.request(method, path, headers=headers, **kw)
        if r.status_code >= 400:
            try:
                detail = r.json().get("detail", r.text)
            except ValueError:
                detail = r.text
            raise TenancyError(f"the running server refused: {detail}")
        return r.json()

    def close(self) -> None:
        self._http.close()

    # tenants
    def create_tenant(self, tenant: str, name: str = "", retention_days: int = 365) -> Tenant:
        if self.tenant(tenant) is not None:
            raise TenancyError(f"tenant {tenant!r} already exists")
        self._call("PUT", f"/v1/operator/tenants/{tenant}",
                   json={"name": name or None, "retention_days": retention_days})
        return self.require_tenant(tenant)

    def tenants(self) -> list[Tenant]:
        return [Tenant(t["tenant"], t["name"], t["retention_days"], datetime.min)
                for t in self._call("GET", "/v1/operator/tenants")]

    def tenant(self, tenant: str) -> Tenant | None:
        return next((t for t in self.tenants() if t.tenant == tenant), None)

    def require_tenant(self, tenant: str) -> Tenant:
        t = self.tenant(tenant)
        if t is None:
            raise TenancyError(f"unknown tenant {tenant!r}")
        return t

    def set_retention(self, tenant: str, days: int) -> None:
        self._call("PUT", "/v1/admin/retention", tenant, json={"retention_days": days})

    # keys
    def create_key(self, tenant: str, role: str, cameras: Any = (),
                   name: str = "") -> tuple[ApiKey, str]:
        k = self._call("POST", "/v1/admin/keys", tenant,
                       json={"role": role, "cameras": list(cameras), "name": name})
        return self._key(tenant, k), k["key"]

    def revoke_key(self, tenant: str, key_id: str, keep_an_admin: bool = True) -> bool:
        try:
            self._call("DELETE", f"/v1/admin/keys/{key_id}", tenant,
                       params={"force": str(not keep_an_admin).lower()})
        except TenancyError as exc:
            if f"no key {key_id}" in str(exc):
                return False
            raise
        return True

    def rotate_key(self, tenant: str, key_id: str,
                   grace: timedelta = timedelta(hours=24)) -> tuple[ApiKey, str]:
        k = self._call("POST", f"/v1/admin/keys/{key_id}/rotate", tenant,
                       json={"grace": f"{int(grace.total_seconds())}s"})
        return self._key(tenant, k), k["key"]

    def keys(self, tenant: str) -> list[ApiKey]:
        return [self._key(tenant, k) for k in self._call("GET", "/v1/admin/keys", tenant)]

    @staticmethod
    def _key(tenant: str, k: dict[str, Any]) -> ApiKey:
        def when(field: str) -> datetime | None:  # naive UTC, as the tenancy keeps them
            if not k.get(field):
                return None
            ts = datetime.fromisoformat(k[field])
            return ts.astimezone(UTC).replace(tzinfo=None) if ts.tzinfo else ts

        return ApiKey(k["key_id"], tenant, k["role"], tuple(k.get("cameras", ())),
                      k.get("name", ""), when("created_at") or datetime.min,
                      when("revoked_at"), when("expires_at"))

    # places
    def add_location(self, tenant: str, location_id: str, name: str = "",
                     timezone: str = "UTC") -> Location:
        loc = self._call("PUT", "/v1/admin/locations", tenant,
                         json={"location_id": location_id, "name": name,
                               "timezone": timezone})
        return Location(loc["location_id"], loc["name"], loc["timezone"])

    def add_camera(self, tenant: str, camera_id: str, location_id: str, name: str = "",
                   timezone: str | None = None) -> Camera:
        c = self._call("PUT", "/v1/admin/cameras", tenant,
                       json={"camera_id": camera_id, "location_id": location_id,
                             "name": name, "timezone": timezone})
        return Camera(c["camera_id"], c["location_id"], c["name"], c["timezone"])

    def set_group(self, tenant: str, name: str, cameras: Any) -> list[str]:
        return self._call("PUT", "/v1/admin/groups", tenant,
                          json={"name": name, "cameras": list(cameras)})["cameras"]

    def _places(self, tenant: str) -> dict[str, Any]:
        return self._call("GET", "/v1/places", tenant)

    def locations(self, tenant: str) -> list[Location]:
        return [Location(x["location_id"], x["name"], x["timezone"])
                for x in self._places(tenant)["locations"]]

    def cameras(self, tenant: str) -> list[Camera]:
        return [Camera(x["camera_id"], x["location_id"], x["name"], x["timezone"])
                for x in self._places(tenant)["cameras"]]

    def groups(self, tenant: str) -> dict[str, list[str]]:
        return self._places(tenant)["groups"]

    def audit_log(self, tenant: str, limit: int = 100) -> list[dict[str, Any]]:
        return self._call("GET", "/v1/admin/audit", tenant, params={"limit": limit})
