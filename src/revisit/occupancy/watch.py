"""After each stored batch with people counts: the alert rules of the locations it
touched, evaluated at each of its snapshots in time order, and the alerts they raise
sent."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from revisit.occupancy.alerts import AlertBook, AlertRule, Deliverer, SmtpSettings, moments
from revisit.occupancy.db import OccupancyDB
from revisit.records import PeopleCount
from revisit.store.base import SightingStore
from revisit.tenancy.db import Tenancy, TenancyError

log = logging.getLogger(__name__)


def webhook_secret(tenancy: Tenancy, tenant: str) -> str:
    """The tenant's webhook signing secret (made at first use, shared by every replica)."""
    return tenancy.shared_secret(f"webhook:{tenant}")


class Watcher:
    def __init__(self, store: SightingStore, settings: Any) -> None:
        tenancy = Tenancy(store)
        self.occupancy = OccupancyDB(store, tenancy)
        self.book = AlertBook(store)
        a = settings.alerts
        smtp = (SmtpSettings(a.smtp_host, a.smtp_port, a.smtp_from, a.smtp_username,
                             a.smtp_password, a.smtp_starttls) if a.smtp_host else None)
        self.deliverer = Deliverer(self.book, lambda t: webhook_secret(tenancy, t), smtp,
                                   attempts=a.attempts, backoff_s=a.backoff_s,
                                   private_webhooks=a.private_webhooks)

    def after(self, counts: list[PeopleCount]) -> None:
        for (tenant, loc), times in moments(counts).items():
            rules = [r for r in self.book.rules(tenant) if r.location_id == loc]
            for ts in times if rules else ():
                self._judge(tenant, loc, rules, ts)

    def _judge(self, tenant: str, loc: str, rules: list[AlertRule], ts: datetime) -> None:
        try:
            now = self.occupancy.live(tenant, loc, now=ts)
        except TenancyError:  # no capacity (rules require one): nothing to judge
            return
        for rule in rules:
            if now.count is None:  # no camera reporting: no data, not zero people
                value = None
            elif rule.metric == "occupancy_pct":
                value = now.pct
            elif rule.zone:
                value = now.zones.get(rule.zone, 0.0)
            else:
                value = now.count
            alert = self.book.evaluate(tenant, rule, value, ts)
            if alert is not None:
                log.info("alert %s: %s", alert.alert_id, alert.message)
                self.deliverer.send(alert)
