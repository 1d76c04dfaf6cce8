"""Alert rules: one alert per episode (hysteresis), none again inside the cooldown, the
held-for time; delivery by a signed webhook and by e-mail through a real SMTP server,
retried with every attempt logged."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import pytest
from pydantic import ValidationError
from tests.receivers import Received, webhook_receiver

from revisit.config.occupancy import STORED
from revisit.occupancy.alerts import AlertBook, AlertRule, Deliverer, SmtpSettings, sign
from revisit.store.base import SightingStore

T0 = datetime(2024, 5, 1, 12, tzinfo=UTC)


def _run(book: AlertBook, rule: AlertRule, values: list[float], step_s: int = 60) -> list[int]:
    """The steps (minutes) at which an alert fired."""
    fired = []
    for i, v in enumerate(values):
        if book.evaluate("default", rule, v, T0 + timedelta(seconds=step_s * i)) is not None:
            fired.append(i)
    return fired


def test_a_snapshot_from_a_clock_running_ahead_does_not_silence_the_rule(
        store: SightingStore) -> None:
    """One frame stamped 20 h ahead (inside the default ingest window of a day) is not
    judged: the real moments after it still count, and the first one above fires."""
    book = AlertBook(store)
    rule = AlertRule(rule_id="full", location_id="L1", above=40, for_s=0, cooldown_s=60)
    book.put_rule("default", rule)
    now = datetime.now(UTC)
    assert book.evaluate("default", rule, 5.0, now + timedelta(hours=20)) is None
    fired = [i for i in range(5)
             if book.evaluate("default", rule, 60.0, now + timedelta(seconds=i)) is not None]
    assert fired == [0]
    # a camera a little fast (inside the slack) is judged as before
    assert book.evaluate("default", rule, 10.0, T0 + timedelta(minutes=14),
                         now=T0 + timedelta(minutes=10)) is None
    assert book.evaluate("default", rule, 60.0, T0 + timedelta(minutes=13),
                         now=T0 + timedelta(minutes=13)) is None  # late: its moment passed


def test_one_alert_per_episode_and_again_after_the_cooldown(store: SightingStore) -> None:
    book = AlertBook(store)
    rule = AlertRule(rule_id="full", location_id="L1", above=80, clear_below=70,
                     cooldown_s=30 * 60)
    book.put_rule("default", rule)
    # above at 1 (fires); wavers 85/75/85 (same episode: 75 is not below 70); clears at 6;
    # above again at 8 (inside the 30 min cooldown: waits) until 31 (cooldown over: fires)
    values = [50, 90, 85, 75, 85, 90, 60, 60] + [95] * 30
    assert _run(book, rule, values) == [1, 31]
    alerts = book.alerts("default")
    assert [a["value"] for a in alerts] == [95.0, 90.0]
    assert alerts[1]["ended_at"] is not None and alerts[0]["ended_at"] is None


def test_held_for_a_while_before_it_fires(store: SightingStore) -> None:
    book = AlertBook(store)
    rule = AlertRule(rule_id="queue", location_id="L1", zone="till", metric="count",
                     above=5, for_s=180)
    assert _run(book, rule, [6, 7, 3, 6, 6, 6, 7, 8]) == [6]  # 3 minutes above from step 3
    with pytest.raises(ValidationError, match="zone rule"):
        AlertRule(rule_id="x", location_id="L1", zone="till", above=5)


@pytest.mark.parametrize("url", ["http://[::1", "http://hooks.example.com:99999/x",
                                 "https://:443/x", "http://host:port/x",
                                 "https://hooks.example.com/a b"])
def test_a_webhook_url_that_cannot_be_parsed_is_refused_up_front(url: str) -> None:
    """Accepted, it would only fail at every delivery, long after the rule was put."""
    with pytest.raises(ValidationError, match="not an http"):
        AlertRule(rule_id="x", location_id="L1", above=5, webhook_url=url)
    AlertRule(rule_id="x", location_id="L1", above=5,
              webhook_url="https://[2001:db8::1]:8443/hooks/revisit?a=1")
    # a rule saved before the check still loads from the store (its deliveries fail, logged)
    stored = AlertRule(rule_id="x", location_id="L1", above=5).model_dump() | {"webhook_url": url}
    assert AlertRule.model_validate(stored, context=STORED).webhook_url == url


@pytest.fixture
def receiver() -> Iterator[tuple[str, Received]]:
    with webhook_receiver() as r:
        yield r


def test_signed_webhook_retried_and_every_attempt_logged(
        store: SightingStore, receiver: tuple[str, Received]) -> None:
    url, got = receiver
    book = AlertBook(store)
    rule = AlertRule(rule_id="full", location_id="L1", above=80, webhook_url=url)
    alert = book.evaluate("default", rule, 90, T0)
    assert alert is not None
    got.fail_first = 2
    d = Deliverer(book, lambda tenant: f"secret-of-{tenant}", attempts=4, backoff_s=0.05,
                  private_webhooks=True)  # the receiver runs on this machine
    d.send(alert)
    d.wait()
    (headers, body), = got.posts
    assert headers["X-Revisit-Signature"] == sign("secret-of-default",
                                                  headers["X-Revisit-Timestamp"], body)
    assert json.loads(body)["location_id"] == "L1" and json.loads(body)["value"] == 90
    attempts = book.alerts("default")[0]["deliveries"]
    assert [(a["attempt"], a["ok"]) for a in attempts] == [(1, False), (2, False), (3, True)]
    assert attempts[0]["detail"] == "RuntimeError: HTTP 503"


def test_a_webhook_into_the_internal_network_is_refused(
        store: SightingStore, receiver: tuple[str, Received]) -> None:
    url, got = receiver  # on 127.0.0.1, as an internal service would be
    book = AlertBook(store)
    rule = AlertRule(rule_id="full", location_id="L1", above=80, webhook_url=url)
    alert = book.evaluate("default", rule, 90, T0)
    assert alert is not None
    d = Deliverer(book, lambda tenant: "s", attempts=2, backoff_s=0.01)
    d.send(alert)
    d.wait()
    assert got.posts == []
    attempts = book.alerts("default")[0]["deliveries"]
    assert [a["ok"] for a in attempts] == [False, False]
    assert "non-public address (127.0.0.1)" in attempts[0]["detail"]


def test_email_through_a_real_smtp_server(store: SightingStore) -> None:
    from aiosmtpd.controller import Controller
    from aiosmtpd.handlers import Message

    class Inbox(Message):
        def __init__(self) -> None:
            super().__init__()
            self.messages: list = []

        def handle_message(self, message) -> None:  # type: ignore[no-untyped-def]
            self.messages.append(message)

    import socket

    with socket.socket() as probe:  # a free port (the controller checks it can connect)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    inbox = Inbox()
    ctl = Controller(inbox, hostname="127.0.0.1", port=port)
    ctl.start()
    try:
        book = AlertBook(store)
        rule = AlertRule(rule_id="full", location_id="L1", above=80,
                         emails=["manager@example.com"])
        alert = book.evaluate("default", rule, 91, T0)
        d = Deliverer(book, lambda t: "s", SmtpSettings("127.0.0.1", port), backoff_s=0.05,
                      private_webhooks=True)
        d.send(alert)  # type: ignore[arg-type]
        d.wait()
    finally:
        ctl.stop()
    (msg,) = inbox.messages
    assert msg["To"] == "manager@example.com" and "L1: 91 % of capacity" in msg["Subject"]
    assert book.alerts("default")[0]["deliveries"][0]["ok"] is True


def test_late_values_zero_clear_and_replaced_rules(store: SightingStore) -> None:
    book = AlertBook(store)
    rule = AlertRule(rule_id="any", location_id="L1", metric="count", above=0, cooldown_s=0)
    assert book.evaluate("default", rule, 1, T0) is not None  # someone in a closed area
    assert book.evaluate("default", rule, 3, T0 - timedelta(minutes=5)) is None  # late: ignored
    assert book.evaluate("default", rule, 0, T0 + timedelta(minutes=1)) is None  # ends at 0
    assert book.alerts("default")[0]["ended_at"] is not None
    assert book.evaluate("default", rule, 2, T0 + timedelta(minutes=2)) is not None  # again
    # replaced by another rule of that id: its open alert ends, the state starts afresh
    assert book.put_rule("default", rule) is True
    assert all(a["ended_at"] is not None for a in book.alerts("default"))
    assert book.put_rule("default", rule) is False  # the same again: nothing changes
    with pytest.raises(ValueError, match="reserved"):
        book.put_rule("default", AlertRule(rule_id="watchlist", location_id="L1", above=1))


def test_a_cooldown_holds_when_the_same_rule_is_put_again(store: SightingStore) -> None:
    book = AlertBook(store)
    rule = AlertRule(rule_id="busy", location_id="L1", metric="count", above=70,
                     clear_below=60, cooldown_s=3600)
    book.put_rule("default", rule)
    assert _run(book, rule, [78, 50]) == [0]
    book.put_rule("default", AlertRule.model_validate_json(rule.model_dump_json()))
    assert book.evaluate("default", rule, 78, T0 + timedelta(minutes=5)) is None  # cooling


def test_a_webhook_goes_to_the_address_checked_not_one_resolved_later(
        store: SightingStore, receiver: tuple[str, Received],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """DNS rebinding: the name resolves to a public address when checked and to the
    internal receiver a moment later. The post must go to the address checked (here
    unreachable), never to the receiver."""
    url, got = receiver
    port = urlsplit(url).port
    real = socket.getaddrinfo
    public = "1.0.0.0"  # global, and not reachable from a test machine
    calls: list[str] = []

    def rebinding(host: str, *args: object, **kw: object) -> list:
        if host != "hook.example.com":
            return real(host, *args, **kw)  # type: ignore[arg-type]
        calls.append(host)
        ip = public if len(calls) == 1 else "127.0.0.1"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port))]

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    book = AlertBook(store)
    rule = AlertRule(rule_id="full", location_id="L1", above=80,
                     webhook_url=f"http://hook.example.com:{port}/hook")
    alert = book.evaluate("default", rule, 90, T0)
    assert alert is not None
    d = Deliverer(book, lambda tenant: "s", attempts=1, backoff_s=0.01, timeout_s=0.5)
    d.send(alert)
    d.wait()
    assert got.posts == []
    (attempt,) = book.alerts("default")[0]["deliveries"]
    assert not attempt["ok"]


def test_the_pinned_request_keeps_the_name_for_host_and_tls(monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    from revisit.occupancy.alerts import _pinned

    def resolve(host: str, *args: object, **kw: object) -> list:
        ip = "2606:4700::1" if host == "v6.example.com" else "1.1.1.1"
        fam = socket.AF_INET6 if ":" in ip else socket.AF_INET
        return [(fam, socket.SOCK_STREAM, 6, "", (ip, 443))]

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    assert _pinned("https://u:p@hook.example.com:8443/x?a=1") == (
        "https://u:p@1.1.1.1:8443/x?a=1", {"Host": "hook.example.com:8443"},
        {"sni_hostname": "hook.example.com"})
    assert _pinned("http://v6.example.com/x") == (
        "http://[2606:4700::1]/x", {"Host": "v6.example.com"}, {})
    # through a proxy the URL goes as it is (the proxy resolves it; a pinned address would
    # fail its TLS tunnel's name check), unless NO_PROXY bypasses it for that host
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example.com:3128")
    assert _pinned("https://hook.example.com/x") == ("https://hook.example.com/x", {}, {})
    monkeypatch.setenv("NO_PROXY", "hook.example.com")
    assert _pinned("https://hook.example.com/x")[0] == "https://1.1.1.1/x"


def test_an_alert_gone_meanwhile_is_not_sent_again_nor_logged(
        store: SightingStore, receiver: tuple[str, Received]) -> None:
    """Erasure takes a watchlist subject's alerts with their delivery log: a delivery still
    retrying must stop, and must not write its attempts back."""
    url, got = receiver
    got.fail_first = 1  # the first attempt fails: the retry comes after the erasure
    book = AlertBook(store)
    rule = AlertRule(rule_id="full", location_id="L1", above=80, webhook_url=url)
    alert = book.evaluate("default", rule, 90, T0)
    assert alert is not None
    real_log = book.log_delivery

    def erase_after_first(*args: object) -> None:
        real_log(*args)  # type: ignore[arg-type]
        with store.transaction() as s:  # type: ignore[attr-defined]
            s.execute("DELETE FROM alert_deliveries WHERE tenant = 'default'")
            s.execute("DELETE FROM alerts WHERE tenant = 'default'")

    book.log_delivery = erase_after_first  # type: ignore[method-assign]
    d = Deliverer(book, lambda tenant: "s", attempts=3, backoff_s=0.01,
                  private_webhooks=True)
    d.send(alert)
    d.wait()
    assert len(got.posts) == 0  # the first attempt failed; no retry after the erasure
    with store.read() as s:  # type: ignore[attr-defined]
        assert s.execute("SELECT count(*) FROM alert_deliveries").fetchone()[0] == 0
    assert book.log_delivery is not real_log
    book.log_delivery = real_log  # type: ignore[method-assign]
    real_log("default", alert.alert_id, "webhook", url, 9, True, "late")  # alert gone
    with store.read() as s:  # type: ignore[attr-defined]
        assert s.execute("SELECT count(*) FROM alert_deliveries").fetchone()[0] == 0
