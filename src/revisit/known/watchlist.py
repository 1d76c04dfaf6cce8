"""Watchlist alerts: a sighting of a person enrolled in a tenant's ``watchlist`` raises an
alert, delivered like occupancy alerts (signed webhook, e-mail, every attempt logged).

Off by default. Turning it on is an admin action that records its purpose; enrolling
into the watchlist needs it on. Each alert, and each time someone lists them, is in the
audit log. An alert carries the store, camera, time, match score and the enrolment's
label, never an image: frames are not kept (docs/privacy.md). One alert per person and
store per ``cooldown`` (a person standing in front of a camera is one alert, not one per
snapshot).
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from revisit.config.occupancy import STORED
from revisit.known.enrol import WATCHLIST, Enrolments, check_tenant
from revisit.occupancy.alerts import (
    WATCHLIST_RULE,
    Alert,
    AlertRule,
    Deliverer,
    Emails,
    WebhookUrl,
)
from revisit.records import Sighting, iso_utc
from revisit.store.base import SightingStore
from revisit.tenancy.db import Tenancy


class WatchlistSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(..., description="Raise alerts for watchlist matches.")
    purpose: str = Field(..., min_length=10, max_length=1000,
                         description="Why this tenant watches for enrolled people (recorded).")
    webhook_url: WebhookUrl = Field(None, max_length=2000)
    emails: Emails = Field(default_factory=list, max_length=20)
    cooldown_s: int = Field(1800, ge=0, le=7 * 86_400,
                            description="At most one alert per person and store this often.")




def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class Watchlist:
    def __init__(self, store: SightingStore, tenancy: Tenancy) -> None:
        self.store, self.tenancy = store, tenancy

    def settings(self, tenant: str) -> WatchlistSettings | None:
        with self.store.read() as s:  # type: ignore[attr-defined]
            row = s.execute("SELECT enabled, purpose, webhook_url, emails FROM watchlist_settings "
                            "WHERE tenant = ?", [tenant]).fetchone()
        if row is None:
            return None
        doc = json.loads(row[3])
        return WatchlistSettings.model_validate(
            {"enabled": row[0], "purpose": row[1], "webhook_url": row[2],
             "emails": doc["emails"], "cooldown_s": doc["cooldown_s"]}, context=STORED)

    def set(self, tenant: str, cfg: WatchlistSettings, actor: str) -> None:
        check_tenant(self.store, self.tenancy, tenant)
        with self.store.transaction() as s:  # type: ignore[attr-defined]
            s.execute("INSERT INTO watchlist_settings (tenant, enabled, purpose, webhook_url, "
                      "emails, keep_frames, changed_by, changed_at) VALUES (?, ?, ?, ?, ?, false, "
                      "?, ?) ON CONFLICT (tenant) DO UPDATE SET enabled = excluded.enabled, "
                      "purpose = excluded.purpose, webhook_url = excluded.webhook_url, "
                      "emails = excluded.emails, changed_by = excluded.changed_by, "
                      "changed_at = excluded.changed_at",
                      [tenant, cfg.enabled, cfg.purpose, cfg.webhook_url,
                       json.dumps({"emails": cfg.emails, "cooldown_s": cfg.cooldown_s}),
                       actor, _now()])
        self.tenancy.audit(tenant, actor, "watchlist.enable" if cfg.enabled
                           else "watchlist.disable", cfg.model_dump())

    def alerts(self, tenant: str, actor: str, limit: int = 100) -> list[dict[str, Any]]:
        """The watchlist's alerts, newest first; the look itself is audited."""
        from revisit.occupancy.alerts import AlertBook

        out = AlertBook(self.store).alerts(tenant, limit, watchlist=True)
        self.tenancy.audit(tenant, actor, "watchlist.alerts.read", {"alerts": len(out)})
        return out


@dataclass
class _Cached:
    at: float
    mark: tuple[Any, ...]  # what the settings and enrolments looked like (_mark)
    cfg: WatchlistSettings | None
    ids: dict[str, str]  # visitor id -> enrolment label


class WatchlistWatcher:
    """After each stored batch: its sightings of watchlist people, as alerts."""

    def __init__(self, store: SightingStore, deliverer: Deliverer, ttl_s: float = 10.0) -> None:
        self.store = store
        self.tenancy = Tenancy(store)
        self.watchlist = Watchlist(store, self.tenancy)
        self.enrolments = Enrolments(store, self.tenancy)
        self.deliverer = deliverer
        self.ttl_s = ttl_s
        self._cache: dict[str, _Cached] = {}
        self._lock = threading.Lock()

    def _mark(self, tenant: str) -> tuple[Any, ...]:
        """One cheap read that changes whenever the watchlist is switched or someone is
        enrolled in it or removed from it, from any process: so a change counts from the
        next batch on, not after the cache's time (which still catches expiries and
        merges)."""
        with self.store.read() as s:  # type: ignore[attr-defined]
            row = s.execute(
                "SELECT (SELECT changed_at FROM watchlist_settings WHERE tenant = ?), "
                "count(*), max(enrolled_at), max(enrolment_id) FROM enrolments "
                "WHERE tenant = ? AND grp = ?", [tenant, tenant, WATCHLIST]).fetchone()
        return tuple(row) if row else ()

    def _tenant(self, tenant: str) -> _Cached:
        with self._lock:
            c = self._cache.get(tenant)
            mark = self._mark(tenant)
            if c is None or c.mark != mark or time.monotonic() - c.at > self.ttl_s:
                cfg = self.watchlist.settings(tenant)
                ids: dict[str, str] = {}
                if cfg is not None and cfg.enabled:
                    for e in self.enrolments.list(tenant, WATCHLIST):
                        for vid in self.enrolments.visitors_of(tenant, e.visitor_id):
                            ids[vid] = e.label
                c = _Cached(time.monotonic(), mark, cfg, ids)
                self._cache[tenant] = c
            return c

    def after(self, sightings: list[Sighting]) -> list[Alert]:
        raised = []
        looked: dict[str, _Cached] = {}  # one look per tenant and batch, not per sighting
        for s in sightings:
            c = looked.get(s.tenant) or looked.setdefault(s.tenant, self._tenant(s.tenant))
            if c.cfg is None or not c.cfg.enabled or s.face_id not in c.ids:
                continue
            alert = self._raise(s, c.ids[s.face_id], c.cfg)
            if alert is not None:
                raised.append(alert)
                self.deliverer.send(alert)
        return raised

    def _raise(self, s: Sighting, label: str, cfg: WatchlistSettings) -> Alert | None:
        ts = s.ts.astimezone(UTC).replace(tzinfo=None)
        # the cooldown on both sides: sightings reach here out of time order (a camera's
        # older batch after another's newer one, a batch's frames in any order)
        cooldown = timedelta(seconds=cfg.cooldown_s)
        since, until = ts - cooldown, ts + cooldown
        rule = AlertRule.model_validate(
            {"rule_id": WATCHLIST_RULE, "location_id": s.location_id, "metric": "count",
             "above": 0, "webhook_url": cfg.webhook_url, "emails": cfg.emails}, context=STORED)
        message = (f"watchlist: {label} at {s.location_id} (camera {s.camera_id}, "
                   f"match {s.match_score:.2f})")
        alert_id = "wl_" + secrets.token_hex(6)
        with self.store.transaction() as tx:  # type: ignore[attr-defined]
            tx.lock("alerts", s.tenant)
            recent = tx.execute(
                "SELECT 1 FROM alerts WHERE tenant = ? AND rule_id = ? AND subject = ? "
                "AND location_id = ? AND started_at > ? AND started_at < ?",
                [s.tenant, WATCHLIST_RULE, s.face_id, s.location_id, since, until]).fetchone()
            if recent:
                return None
            tx.execute("INSERT INTO alerts (tenant, alert_id, rule_id, location_id, zone, value, "
                       "message, started_at, ended_at, subject) VALUES (?, ?, ?, ?, ?, ?, ?, ?, "
                       "?, ?)", [s.tenant, alert_id, WATCHLIST_RULE, s.location_id, s.camera_id,
                                 s.match_score, message, ts, ts, s.face_id])
        self.tenancy.audit(s.tenant, "system", "watchlist.alert",
                           {"alert_id": alert_id, "visitor_id": s.face_id, "label": label,
                            "location_id": s.location_id, "camera_id": s.camera_id,
                            "score": round(s.match_score, 3), "ts": iso_utc(ts)})
        return Alert(s.tenant, alert_id, rule, s.match_score, ts.replace(tzinfo=UTC), message)
