"""The watchlist's alerts follow its switch and its enrolments from the next batch on,
whatever the watcher caches (a person removed, or the list switched off, raises nothing)."""

from __future__ import annotations

from tests.receivers import NoDelivery

from revisit.known.enrol import Enrolments
from revisit.known.watchlist import Watchlist, WatchlistSettings, WatchlistWatcher
from revisit.store.base import SightingStore
from revisit.store.testing import at, batch, sighting
from revisit.tenancy.db import Tenancy


def test_a_change_counts_from_the_next_batch(store: SightingStore) -> None:
    ten = Tenancy(store)
    ten.create_tenant("default")
    store.write(batch([sighting("V-000001", at(0)), sighting("V-000002", at(0))]))
    wl = Watchlist(store, ten)
    wl.set("default", WatchlistSettings(enabled=True, purpose="loss prevention, tested"),
           "admin")
    book = Enrolments(store, ten)
    e = book.enrol_visitor("default", "watchlist", "V-000001", label="Jane", reason="tested")
    watcher = WatchlistWatcher(store, NoDelivery(), ttl_s=3600)  # the cache never expires
    assert len(watcher.after([sighting("V-000001", at(10))])) == 1
    book.remove("default", e.enrolment_id)
    assert watcher.after([sighting("V-000001", at(30))]) == []
    book.enrol_visitor("default", "watchlist", "V-000002", label="John", reason="tested")
    assert len(watcher.after([sighting("V-000002", at(50))])) == 1
    wl.set("default", WatchlistSettings(enabled=False, purpose="loss prevention, tested"),
           "admin")
    assert watcher.after([sighting("V-000002", at(70))]) == []


def test_one_alert_per_cooldown_whatever_order_the_sightings_come_in(
        store: SightingStore) -> None:
    """The cooldown holds on both sides of an alert: a camera's older batch stored after
    another camera's newer one, or a batch's frames out of time order, raise nothing new
    within it; a sighting a whole cooldown away does."""
    ten = Tenancy(store)
    ten.create_tenant("default")
    store.write(batch([sighting("V-000001", at(0))]))
    Watchlist(store, ten).set("default", WatchlistSettings(
        enabled=True, purpose="loss prevention, tested", cooldown_s=1800), "admin")
    Enrolments(store, ten).enrol_visitor("default", "watchlist", "V-000001", label="Jane",
                                         reason="tested")
    watcher = WatchlistWatcher(store, NoDelivery())
    assert len(watcher.after([sighting("V-000001", at(60), camera="door")])) == 1
    assert watcher.after([sighting("V-000001", at(59), camera="till")]) == []  # older, later
    assert watcher.after([sighting("V-000001", at(31))]) == []  # 29 min before the alert
    # one batch, its frames out of order: one alert
    assert len(watcher.after([sighting("V-000001", at(180)),
                              sighting("V-000001", at(179))])) == 1
    assert len(watcher.after([sighting("V-000001", at(120))])) == 1  # 60 min from both
