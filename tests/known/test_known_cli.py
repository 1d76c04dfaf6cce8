"""``revisit known``: enrol from photos (and the error for a photo without a usable face),
list, presence, end; the watchlist switch needs a purpose."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
from tests.conftest import lfw_photo
from typer.testing import CliRunner

from revisit.cli.main import app

runner = CliRunner()


def test_enrol_list_remove_and_the_watchlist_switch(tmp_path: Path) -> None:
    data = ["--data", str(tmp_path / "d")]
    wall = tmp_path / "wall.jpg"
    cv2.imwrite(str(wall), np.full((200, 200, 3), 120, np.uint8))
    bad = runner.invoke(app, [*data, "known", "enrol", "-t", "default", str(wall),
                              "--label", "Anna", "--reason", "works here"])
    assert bad.exit_code == 2 and "no usable face" in bad.output
    ok = runner.invoke(app, [*data, "known", "enrol", "-t", "default",
                             str(lfw_photo("Colin_Powell", 1)), "--label", "Colin",
                             "--reason", "store manager"])
    assert ok.exit_code == 0, ok.output
    listed = [json.loads(x) for x in runner.invoke(
        app, [*data, "known", "list", "-t", "default"]).output.splitlines()]
    assert [(e["label"], e["group"], e["source"]) for e in listed] == [("Colin", "staff", "photos")]
    off = runner.invoke(app, [*data, "known", "enrol", "-t", "default", "--group", "watchlist",
                              str(lfw_photo("Andre_Agassi", 1)), "--label", "X",
                              "--reason", "banned"])
    assert off.exit_code == 2 and "watchlist is off" in off.output
    short = runner.invoke(app, [*data, "known", "watchlist", "-t", "default", "--enable",
                                "--purpose", "because"])
    assert short.exit_code == 2
    gone = runner.invoke(app, [*data, "known", "remove", "-t", "default",
                               listed[0]["enrolment_id"]])
    assert gone.exit_code == 0 and "'exemplars': 1" in gone.output
    assert runner.invoke(app, [*data, "known", "list", "-t", "default"]).output == ""


def test_enrol_a_visitor_without_photos_and_mistakes_said_in_one_line(tmp_path: Path) -> None:
    from revisit.store.duckdb_store import DuckDBStore
    from revisit.store.testing import at, batch, sighting

    data = ["--data", str(tmp_path / "d")]
    store = DuckDBStore(tmp_path / "d" / "revisit.duckdb")
    store.write(batch([sighting("V-000001", at(0))]))
    store.close()
    base = [*data, "known", "enrol", "-t", "default", "--reason", "works the tills"]
    bad = runner.invoke(app, [*base, "--visitor", "V-000001", "--expires", "garbage"])
    assert bad.exit_code == 2 and "not an ISO date" in bad.output
    past = runner.invoke(app, [*base, "--visitor", "V-000001", "--expires", "2020-01-01"])
    assert past.exit_code == 2 and "in the past" in past.output
    both = runner.invoke(app, [*base, "--visitor", "V-000001", str(lfw_photo("Colin_Powell", 1))])
    assert both.exit_code == 2 and "not both" in both.output
    assert runner.invoke(app, base).exit_code == 2
    ok = runner.invoke(app, [*base, "--visitor", "V-000001", "--expires", "2099-01-01"])
    assert ok.exit_code == 0 and "as V-000001" in ok.output, ok.output


def test_a_photo_without_a_usable_face_is_named(tmp_path: Path) -> None:
    wall = tmp_path / "wall.jpg"
    cv2.imwrite(str(wall), np.full((200, 200, 3), 120, np.uint8))
    r = runner.invoke(app, ["--data", str(tmp_path / "d"), "known", "enrol", "-t", "default",
                            str(lfw_photo("Colin_Powell", 1)), str(wall), "--label", "Colin",
                            "--reason", "store manager"])
    assert r.exit_code == 0, r.output
    assert "enrolled 'Colin'" in r.output and "skipped photo 2: no face found" in r.output
