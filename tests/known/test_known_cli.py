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
