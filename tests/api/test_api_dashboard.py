"""The dashboard in headless Chromium (Debian's ``chromium`` + Playwright's Python package).

The data is hand-built sightings (the dashboard is about drawing the report, not about
faces); the figures on the page are checked against the API. Saves docs/dashboard.png.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.api.conftest import Env, make_env, serving

CHROMIUM = Path("/usr/bin/chromium")
DOCS = Path(__file__).resolve().parents[2] / "docs"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run", "--disable-sync"]

if not CHROMIUM.exists():
    pytest.skip("dashboard test needs Debian's chromium at /usr/bin/chromium "
                "(apt-get install chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")


def _populate(env: Env) -> None:
    """~80 visitors over two weeks in three stores, some returning."""
    from revisit.store.testing import at, batch, sighting

    t = env.service.tenancy
    t.add_location("acme", "305", "Old Town", "Europe/Berlin")
    t.add_camera("acme", "camC", "305")
    t.set_group("acme", "city", ["camA", "camC"])
    rng = random.Random(7)
    cams = {"101": "camA", "203": "camB", "305": "camC"}
    sightings = []
    for v in range(1, 81):
        vid = f"V-{v:06X}"
        home = rng.choice(list(cams))
        for _ in range(rng.choice([1, 1, 1, 2, 2, 3, 4, 6])):
            loc = home if rng.random() < 0.8 else rng.choice(list(cams))
            day = rng.randrange(14)
            minute = rng.randrange(600)
            for k in range(rng.randrange(1, 4)):  # a few snapshots per visit
                sightings.append(sighting(vid, at(minute + 2 * k, day), loc, cams[loc],
                                          tenant="acme"))
    env.service.runtime.store.write(batch(sightings))


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Env]]:
    gen = make_env(tmp_path, processing=False)
    env = next(gen)
    _populate(env)
    try:
        with serving(env.client.app) as base:
            yield base, env
    finally:
        gen.close()


def test_dashboard_in_headless_chromium(server: tuple[str, Env]) -> None:
    base, env = server
    period = {"from": "2024-03-01", "to": "2024-03-14"}
    api = env.client.get("/v1/reports/summary", params=period,
                         headers=env.auth("analyst")).json()
    assert api["totals"]["unique_visitors"] > 50
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            blocked: list[str] = []
            page.on("request", lambda r: blocked.append(r.url)
                    if not r.url.startswith(base) else None)
            page.goto(f"{base}/dashboard?from={period['from']}&to={period['to']}")
            assert page.url.startswith(f"{base}/login")
            page.fill("#key", env.keys["cam_a"])  # a camera key cannot read reports
            page.click("button[type=submit]")
            assert "cannot read reports" in page.text_content("#login-error")
            page.fill("#key", env.keys["analyst"])
            page.click("button[type=submit]")
            page.goto(f"{base}/dashboard?from={period['from']}&to={period['to']}")
            page.wait_for_selector("body[data-loaded=true]", timeout=15_000)

            t = api["totals"]
            assert page.text_content("#t-visitors") == str(t["unique_visitors"])
            assert page.text_content("#t-visits") == str(t["visits"])
            assert page.text_content("#t-returning") == f"{round(t['returning_share'] * 100)}%"
            def drawn(chart_id: str) -> list:
                """The values a Chart.js chart on the page was drawn with."""
                return page.evaluate(
                    f"Chart.getChart('{chart_id}').data.datasets[0].data")

            assert drawn("daily-chart") == [d["unique_visitors"] for d in api["daily"]]
            assert len(drawn("daily-chart")) == 14
            assert drawn("histogram-chart") == [h["visitors"] for h in api["histogram"]]
            assert drawn("dwell-chart") == list(api["dwell"]["all"]["buckets"].values())
            assert sum(drawn("hour-chart")) == sum(drawn("weekday-chart")) == t["visits"]
            # UTC unless asked; the stores' zone is offered in the field's list
            assert page.input_value("#tz") == "UTC"
            assert page.text_content("#hour-zone") == "(UTC)"
            assert drawn("hour-chart") == [h["visits"] for h in api["by_hour"]]
            assert page.locator("#tz-list option[value='Europe/Berlin']").count() == 1
            assert page.locator("#no-charts").is_hidden()
            # the heatmap of the first camera, drawn by the API, shown
            page.wait_for_function("document.querySelector('#heatmap').complete && "
                                   "document.querySelector('#heatmap').naturalWidth > 0")
            # where visitors went next, and paths through cameras (one camera a store here)
            assert page.locator("#transitions tbody tr").count() >= 1
            # store affinity: 3 x 3, the diagonal empty
            assert page.locator("#affinity tbody tr").count() == 3
            assert "%" in page.text_content("#affinity tbody")
            assert page.locator("#stores tbody tr").count() == 3
            assert "Main Street" in page.text_content("#stores tbody")
            assert page.locator("#visitors tbody tr").count() == 25
            # stores by name in the visitors table (the API's locations)
            assert "Main Street: " in page.text_content("#visitors tbody")
            info = page.text_content("#page-info")
            assert info.startswith("page 1 of") and f"{t['unique_visitors']} visitors" in info

            # sort by visitor id (descending first), then page on
            page.click("th[data-sort=visitor_id]")
            page.wait_for_function(
                "document.querySelector('#visitors tbody td').textContent === 'V-000050'")
            page.click("#next")
            page.wait_for_function(
                "document.querySelector('#page-info').textContent.startsWith('page 2')")

            # CSV export with the session cookie
            href = page.get_attribute("#csv", "href")
            csv_text = page.request.get(base + href).text()
            assert csv_text.splitlines()[0].startswith("Visitor ID,Total Appearances")
            assert len(csv_text.splitlines()) == t["unique_visitors"] + 1

            page.screenshot(path=str(DOCS / "dashboard.png"), full_page=True)
            page.locator("section.charts").nth(1).screenshot(path=str(DOCS / "analytics.png"))

            # a camera group narrows everything
            page.select_option("#camera_group", "harbour")
            page.click("#apply")
            harbour = env.client.get("/v1/reports/summary", params={**period,
                                     "camera_group": "harbour"},
                                     headers=env.auth("analyst")).json()
            page.wait_for_function(
                f"document.querySelector('#t-visitors').textContent === "
                f"'{harbour['totals']['unique_visitors']}'")
            assert page.locator("#stores tbody tr").count() == 1

            # another zone, typed in
            page.fill("#tz", "Asia/Tokyo")
            page.click("#apply")
            tokyo = env.client.get("/v1/reports/summary", params={
                **period, "camera_group": "harbour", "tz": "Asia/Tokyo"},
                headers=env.auth("analyst")).json()
            hours = [h["visits"] for h in tokyo["by_hour"]]
            assert hours != [h["visits"] for h in harbour["by_hour"]]
            page.wait_for_function(f"Chart.getChart('hour-chart').data.datasets[0].data"
                                   f".join() === '{','.join(map(str, hours))}'")
            assert not blocked, f"the dashboard fetched outside the app: {blocked}"

            # sign out ends the session
            page.click("text=Sign out")
            assert page.url.startswith(f"{base}/login")
            assert page.request.get(base + href).status == 401
        finally:
            browser.close()
