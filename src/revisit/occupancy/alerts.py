"""Threshold alerts on occupancy: rules, their episodes, and delivery by webhook and e-mail.

A rule watches one location's occupancy (% of capacity) or a people count (the location,
or one named zone summed over its cameras). An *episode* starts when the value has been
above ``above`` for at least ``for_s`` seconds, and ends when it falls below
``clear_below`` (hysteresis: a value wavering around the threshold is one episode, not
many). An episode raises one alert, unless the rule fired less than ``cooldown_s`` ago:
then it waits, and fires when the cooldown is over if the value is still high. Time is the
snapshots' time, so a replay decides as live ingestion did.

Delivery: each alert goes to the rule's webhook (JSON, signed with the tenant's webhook
secret: header ``X-Revisit-Signature: sha256=<HMAC-SHA256 of timestamp "." body>``,
``X-Revisit-Timestamp``) and e-mail addresses (SMTP from settings), each retried with
exponential backoff; every attempt is stored (``alert_deliveries``).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import re
import secrets
import smtplib
import socket
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from revisit.config.occupancy import STORED, from_store
from revisit.records import PeopleCount, iso_utc
from revisit.store.base import SightingStore

log = logging.getLogger(__name__)
WATCHLIST_RULE = "watchlist"  # the rule id of watchlist alerts (revisit.known.watchlist)
# A snapshot stamped further than this past the server's clock comes from a camera clock
# running ahead: it is not judged, since a rule's state moving there would make every
# real moment before it "late" (ignored) until the clock caught up.
FUTURE_SLACK = timedelta(minutes=5)
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_RULE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")


def check_webhook_url(v: str | None, info: ValidationInfo) -> str | None:
    """An http(s) URL with a host and a valid port: one that cannot be parsed would only
    fail at every delivery, long after the rule was accepted. One read back from the store
    (``STORED`` context), saved before this check, still loads: its deliveries fail, logged."""
    if v is None:
        return v
    if from_store(info):
        return v
    bad = ValueError(f"webhook_url {v!r} is not an http(s) URL")
    if not re.match(r"^https?://[^\s/]+", v) or re.search(r"\s", v):
        raise bad
    try:
        parts = urlsplit(v)
        parts.port  # noqa: B018 (raises on a port out of range or not a number)
    except ValueError:
        raise bad from None
    if not parts.hostname:
        raise bad
    return v


def check_emails(v: list[str]) -> list[str]:
    for e in v:
        if not _EMAIL.match(e):
            raise ValueError(f"{e!r} is not an e-mail address")
    return v


# alert targets, checked where any model names them (rules, the watchlist)
WebhookUrl = Annotated[str | None, AfterValidator(check_webhook_url)]
Emails = Annotated[list[str], AfterValidator(check_emails)]


class AlertRule(BaseModel):
    """When to alert, and whom."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rule_id: str = Field(..., description="Name of the rule (letters, digits, _ . -).")
    location_id: str = Field(..., min_length=1, max_length=64)
    zone: str = Field("", max_length=64, description="A named zone; empty: the location.")
    metric: Literal["occupancy_pct", "count"] = Field(
        "occupancy_pct", description="occupancy_pct (the location's % of capacity) or count "
        "(people: the location's, or the zone's).")
    above: float = Field(..., ge=0, le=1_000_000, description="Alert above this value.")
    clear_below: float | None = Field(
        None, ge=0, le=1_000_000, description="The episode ends below this value "
        "(default: 90 % of `above`).")
    for_s: int = Field(0, ge=0, le=86_400, description="Only after this long above.")
    cooldown_s: int = Field(900, ge=0, le=7 * 86_400,
                            description="At most one alert per this many seconds.")
    webhook_url: WebhookUrl = Field(None, max_length=2000)
    emails: Emails = Field(default_factory=list, max_length=20)

    @field_validator("rule_id")
    @classmethod
    def _rule_id(cls, v: str) -> str:
        if not _RULE_ID.match(v):
            raise ValueError(f"rule id {v!r}: use 1-64 letters, digits, _ . -")
        return v

    @classmethod
    def check_user_rule(cls, rule: AlertRule) -> AlertRule:
        """A rule a person defines: ``watchlist`` names the watchlist's own alerts."""
        if rule.rule_id == WATCHLIST_RULE:
            raise ValueError(f"rule id {WATCHLIST_RULE!r} is reserved for watchlist alerts")
        return rule

    @model_validator(mode="after")
    def _check(self) -> AlertRule:
        if self.zone and self.metric != "count":
            raise ValueError("a zone rule watches a count (metric 'count')")
        if self.clear_below is not None and self.clear_below > self.above:
            raise ValueError(f"clear_below ({self.clear_below}) must not exceed above "
                             f"({self.above})")
        return self

    @property
    def clear(self) -> float:
        return self.clear_below if self.clear_below is not None else 0.9 * self.above


@dataclass(frozen=True, slots=True)
class Alert:
    tenant: str
    alert_id: str
    rule: AlertRule
    value: float
    started_at: datetime
    message: str

    def payload(self) -> dict[str, Any]:
        r = self.rule
        return {"alert_id": self.alert_id, "tenant": self.tenant, "rule_id": r.rule_id,
                "location_id": r.location_id, "zone": r.zone, "metric": r.metric,
                "value": round(self.value, 3), "above": r.above,
                "started_at": self.started_at.isoformat().replace("+00:00", "Z"),
                "message": self.message}


def _naive(ts: datetime) -> datetime:
    return ts.astimezone(UTC).replace(tzinfo=None) if ts.tzinfo else ts


def _aware(ts: datetime | None) -> datetime | None:
    return None if ts is None else (ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts)


class AlertBook:
    """Rules, their state and the alerts, in the store's database."""

    def __init__(self, store: SightingStore) -> None:
        self.store = store

    def _rows(self, sql: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        with self.store.read() as s:
            return list(s.execute(sql, list(params)).fetchall())

    def put_rule(self, tenant: str, rule: AlertRule) -> bool:
        """Create or replace; a changed rule ends its open alert and starts afresh, the
        same rule put again (configuration management re-applying it) changes nothing, so
        its cooldown holds. Returns whether anything changed."""
        AlertRule.check_user_rule(rule)
        with self.store.transaction() as s:
            s.lock("alerts", tenant)
            row = s.execute("SELECT config FROM alert_rules WHERE tenant = ? AND rule_id = ?",
                            [tenant, rule.rule_id]).fetchone()
            if row is not None and AlertRule.model_validate_json(row[0], context=STORED) == rule:
                return False
            s.execute("INSERT INTO alert_rules (tenant, rule_id, config, created_at) "
                      "VALUES (?, ?, ?, ?) ON CONFLICT (tenant, rule_id) DO UPDATE SET "
                      "config = excluded.config",
                      [tenant, rule.rule_id, rule.model_dump_json(), _naive(datetime.now(UTC))])
            self._reset(s, tenant, rule.rule_id)
        return True

    def delete_rule(self, tenant: str, rule_id: str) -> bool:
        with self.store.transaction() as s:
            n = s.count("DELETE FROM alert_rules WHERE tenant = ? AND rule_id = ?",
                        [tenant, rule_id])
            self._reset(s, tenant, rule_id)
        return bool(n)

    @staticmethod
    def _reset(s: Any, tenant: str, rule_id: str) -> None:
        s.execute("UPDATE alerts SET ended_at = ? WHERE tenant = ? AND rule_id = ? "
                  "AND ended_at IS NULL", [_naive(datetime.now(UTC)), tenant, rule_id])
        s.execute("DELETE FROM alert_state WHERE tenant = ? AND rule_id = ?", [tenant, rule_id])

    def rules(self, tenant: str) -> list[AlertRule]:
        return [AlertRule.model_validate_json(c, context=STORED) for (c,) in self._rows(
            "SELECT config FROM alert_rules WHERE tenant = ? ORDER BY rule_id", (tenant,))]

    def alerts(self, tenant: str, limit: int = 100,
               watchlist: bool = False) -> list[dict[str, Any]]:
        """Occupancy alerts, or (``watchlist``) only the watchlist's, which name enrolled
        people and are read by admins only, audited (revisit.known.watchlist)."""
        rows = self._rows(
            "SELECT alert_id, rule_id, location_id, zone, value, message, started_at, ended_at "
            f"FROM alerts WHERE tenant = ? AND rule_id {'=' if watchlist else '<>'} ? "
            "ORDER BY started_at DESC, alert_id LIMIT ?", (tenant, WATCHLIST_RULE, limit))
        deliveries: dict[str, list[dict[str, Any]]] = {}
        ids = [r[0] for r in rows]
        if ids:
            for a, ch, target, n, ts, ok, detail in self._rows(
                    "SELECT alert_id, channel, target, attempt, ts, ok, detail "
                    "FROM alert_deliveries WHERE tenant = ? AND alert_id IN "
                    "(SELECT unnest(?::VARCHAR[])) ORDER BY ts, attempt", (tenant, ids)):
                deliveries.setdefault(a, []).append(
                    {"channel": ch, "target": target, "attempt": int(n), "ok": bool(ok),
                     "detail": detail, "ts": _iso(ts)})
        return [{"alert_id": a, "rule_id": r, "location_id": loc, "zone": z,
                 "value": round(float(v), 3), "message": m, "started_at": _iso(st),
                 "ended_at": _iso(en), "deliveries": deliveries.get(a, [])}
                for a, r, loc, z, v, m, st, en in rows]

    def log_delivery(self, tenant: str, alert_id: str, channel: str, target: str,
                     attempt: int, ok: bool, detail: str) -> None:
        """Record an attempt, unless the alert is gone meanwhile (erased with its subject,
        or purged): a delivery row must not outlive its alert."""
        with self.store.transaction() as s:
            s.execute("INSERT INTO alert_deliveries SELECT ?, ?, ?, ?, ?, ?, ?, ? WHERE EXISTS "
                      "(SELECT 1 FROM alerts WHERE tenant = ? AND alert_id = ?) "
                      "ON CONFLICT DO NOTHING",
                      [tenant, alert_id, channel, target, attempt,
                       _naive(datetime.now(UTC)), ok, detail[:500], tenant, alert_id])

    def exists(self, tenant: str, alert_id: str) -> bool:
        with self.store.read() as s:
            return s.execute("SELECT 1 FROM alerts WHERE tenant = ? AND alert_id = ?",
                             [tenant, alert_id]).fetchone() is not None

    def evaluate(self, tenant: str, rule: AlertRule, value: float | None,
                 ts: datetime, now: datetime | None = None) -> Alert | None:
        """Advance a rule's state with the value at ``ts``; the alert it raises, if any.
        None values (no data), and moments more than :data:`FUTURE_SLACK` after ``now``
        (default: the clock), leave the state as it is."""
        if value is None or ts > (now or datetime.now(UTC)) + FUTURE_SLACK:
            return None
        with self.store.transaction() as s:
            s.lock("alerts", tenant)
            row = s.execute("SELECT above_since, active_alert, last_fired, last_ts FROM "
                            "alert_state WHERE tenant = ? AND rule_id = ?",
                            [tenant, rule.rule_id]).fetchone()
            above_since, active, last, seen = ((_aware(row[0]), row[1], _aware(row[2]),
                                                _aware(row[3])) if row
                                               else (None, None, None, None))
            if seen is not None and ts < seen:  # a late batch: its moment has passed
                return None
            fired: Alert | None = None
            if active is not None:
                if value <= rule.clear:
                    s.execute("UPDATE alerts SET ended_at = ? WHERE tenant = ? AND alert_id = ?",
                              [_naive(ts), tenant, active])
                    active, above_since = None, None
            elif value > rule.above:
                above_since = above_since or ts
                held = (ts - above_since).total_seconds() >= rule.for_s
                cooled = last is None or (ts - last).total_seconds() >= rule.cooldown_s
                if held and cooled:
                    fired = Alert(tenant, "al_" + secrets.token_hex(6), rule, value, ts,
                                  _message(rule, value))
                    s.execute("INSERT INTO alerts (tenant, alert_id, rule_id, location_id, "
                              "zone, value, message, started_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                              [tenant, fired.alert_id, rule.rule_id, rule.location_id,
                               rule.zone, value, fired.message, _naive(ts)])
                    active, last = fired.alert_id, ts
            elif value <= rule.clear:
                above_since = None
            s.execute("INSERT INTO alert_state (tenant, rule_id, above_since, active_alert, "
                      "last_fired, last_ts) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT "
                      "(tenant, rule_id) DO UPDATE SET above_since = excluded.above_since, "
                      "active_alert = excluded.active_alert, last_fired = excluded.last_fired, "
                      "last_ts = excluded.last_ts",
                      [tenant, rule.rule_id, above_since and _naive(above_since), active,
                       last and _naive(last), _naive(ts)])
        return fired


def _message(rule: AlertRule, value: float) -> str:
    where = f"zone {rule.zone!r} of {rule.location_id}" if rule.zone else rule.location_id
    what = f"{value:.0f} % of capacity" if rule.metric == "occupancy_pct" else f"{value:.0f} people"
    return f"{where}: {what} (above {rule.above:g})"


def _iso(ts: datetime | None) -> str | None:
    return iso_utc(ts) or None


# -- delivery ---------------------------------------------------------------------------


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The webhook signature a receiver recomputes to trust a message."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int = 25
    sender: str = "revisit@localhost"
    username: str = ""
    password: str = ""
    starttls: bool = False


def _pinned(url: str) -> tuple[str, dict[str, str], dict[str, Any]]:
    """(the URL with its host replaced by the address checked, the Host header, httpx's
    request extensions) for a webhook whose host resolves only to public addresses; else
    RuntimeError (logged as the delivery's failure). The request goes to the address
    checked: a name that resolves again to an internal one a moment later (DNS rebinding)
    is not followed. HTTPS still verifies the certificate against the name (SNI). Through
    a proxy from the environment the URL goes as it is: the proxy resolves it."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except OSError as exc:
        raise RuntimeError(f"cannot resolve webhook host {host!r}: {exc}") from None
    addrs = [ipaddress.ip_address(info[4][0]) for info in infos]
    for ip in addrs:
        if not ip.is_global:
            raise RuntimeError(f"webhook host {host!r} is at a non-public address ({ip}); "
                               "alerts.private_webhooks allows that")
    if not addrs:
        raise RuntimeError(f"cannot resolve webhook host {host!r}: no address")
    if _proxied(parts.scheme, host):  # the proxy connects (and resolves) for us: a pinned
        return url, {}, {}  # address would break its TLS tunnel's name check and NO_PROXY
    userinfo, _, hostport = parts.netloc.rpartition("@")
    at = f"[{addrs[0]}]" if addrs[0].version == 6 else str(addrs[0])
    netloc = (f"{userinfo}@" if userinfo else "") + at + (f":{parts.port}" if parts.port else "")
    extensions = {"sni_hostname": host} if parts.scheme == "https" else {}
    return urlunsplit(parts._replace(netloc=netloc)), {"Host": hostport}, extensions


def _proxied(scheme: str, host: str) -> bool:
    """Whether httpx sends this request through a proxy from the environment
    (``HTTPS_PROXY``, ``HTTP_PROXY``, ``ALL_PROXY``, not bypassed by ``NO_PROXY``)."""
    proxies = urllib.request.getproxies_environment()
    if not (proxies.get(scheme) or proxies.get("all")):
        return False
    return not urllib.request.proxy_bypass_environment(host)


class Deliverer:
    """Sends alerts on a background thread, retrying each channel with exponential
    backoff (``attempts`` tries, ``backoff_s`` doubling) and logging every attempt."""

    def __init__(self, book: AlertBook, secret_of: Callable[[str], str],
                 smtp: SmtpSettings | None = None, attempts: int = 4,
                 backoff_s: float = 1.0, timeout_s: float = 5.0,
                 private_webhooks: bool = False) -> None:
        self.book, self.secret_of, self.smtp = book, secret_of, smtp
        self.attempts, self.backoff_s, self.timeout_s = attempts, backoff_s, timeout_s
        self.private_webhooks = private_webhooks
        self._threads: list[threading.Thread] = []

    def send(self, alert: Alert) -> None:
        t = threading.Thread(target=self._send, args=(alert,), daemon=True,
                             name=f"alert-{alert.alert_id}")
        self._threads = [x for x in self._threads if x.is_alive()] + [t]
        t.start()

    def wait(self, timeout_s: float = 30.0) -> None:
        """Until the deliveries under way end (tests, shutdown)."""
        end = time.monotonic() + timeout_s
        for t in list(self._threads):
            t.join(max(0.0, end - time.monotonic()))

    def _send(self, alert: Alert) -> None:
        channels: list[tuple[str, str, Callable[[], str]]] = []
        if alert.rule.webhook_url:
            channels.append(("webhook", alert.rule.webhook_url, lambda: self._webhook(alert)))
        for addr in alert.rule.emails:
            channels.append(("email", addr, lambda a=addr: self._email(alert, a)))  # type: ignore[misc]
        for channel, target, fn in channels:
            for attempt in range(1, self.attempts + 1):
                if not self.book.exists(alert.tenant, alert.alert_id):
                    return  # erased (a watchlist subject) or purged since: not sent again
                try:
                    detail, ok = fn(), True
                except Exception as exc:  # any failure is retried and logged
                    detail, ok = f"{type(exc).__name__}: {exc}", False
                self.book.log_delivery(alert.tenant, alert.alert_id, channel, target, attempt,
                                       ok, detail)
                if ok:
                    break
                log.warning("alert %s: %s to %s failed (attempt %d): %s", alert.alert_id,
                            channel, target, attempt, detail)
                if attempt < self.attempts:
                    time.sleep(self.backoff_s * 2 ** (attempt - 1))

    def _webhook(self, alert: Alert) -> str:
        import httpx

        url, host, extensions = alert.rule.webhook_url or "", {}, {}
        if not self.private_webhooks:
            url, host, extensions = _pinned(url)
        body = json.dumps(alert.payload(), sort_keys=True).encode()
        stamp = str(int(time.time()))
        with httpx.Client(timeout=self.timeout_s) as client:
            r = client.post(url, content=body, extensions=extensions, headers={
                **host, "Content-Type": "application/json", "X-Revisit-Timestamp": stamp,
                "X-Revisit-Signature": sign(self.secret_of(alert.tenant), stamp, body)})
        if r.status_code >= 300:
            raise RuntimeError(f"HTTP {r.status_code}")
        return f"HTTP {r.status_code}"

    def _email(self, alert: Alert, to: str) -> str:
        if self.smtp is None:
            raise RuntimeError("no SMTP server configured (alerts.smtp_host)")
        msg = EmailMessage()
        msg["From"], msg["To"] = self.smtp.sender, to
        msg["Subject"] = f"[revisit] {alert.message}"
        msg.set_content(json.dumps(alert.payload(), indent=2))
        with smtplib.SMTP(self.smtp.host, self.smtp.port, timeout=self.timeout_s) as smtp:
            if self.smtp.starttls:
                smtp.starttls()
            if self.smtp.username:
                smtp.login(self.smtp.username, self.smtp.password)
            smtp.send_message(msg)
        return f"sent via {self.smtp.host}:{self.smtp.port}"


def moments(counts: list[PeopleCount]) -> dict[tuple[str, str], list[datetime]]:
    """(tenant, location) -> the snapshot times among new counts, in order: where and when
    rules need a look after a batch (every snapshot, so a peak between two others counts
    however the frames were batched)."""
    out: dict[tuple[str, str], set[datetime]] = {}
    for c in counts:
        out.setdefault((c.tenant, c.location_id), set()).add(c.ts)
    return {k: sorted(v) for k, v in out.items()}

