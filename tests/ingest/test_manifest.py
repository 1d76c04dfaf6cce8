"""Manifest lines: a line whose ids hold a control character is refused, naming its line
and field, as other bad lines are (the HTTP API refuses such ids too)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from revisit.ingest.manifest import ManifestError, parse_line, read_manifest
from revisit.records import Frame, Rejected


def _line(**over: object) -> str:
    obj = {"image": "a.jpg", "camera_id": "c1", "location_id": "101",
           "ts": "2024-01-05T09:00:00+01:00", **over}
    return json.dumps(obj)


@pytest.fixture
def base(tmp_path: Path) -> Path:
    (tmp_path / "a.jpg").write_bytes(b"\xff\xd8 not decoded here")
    return tmp_path


@pytest.mark.parametrize(("field", "value"), [
    ("camera_id", "c\x001"),  # NUL: once poisoned a distributed batch
    ("location_id", "1\x1b[2J01"),  # an escape sequence
    ("image_id", "img\n2"),
    ("image_id", "img\u0085x"),  # a C1 control (NEL)
    ("image_id", "img\ud800"),  # a lone surrogate: JSON can say it, UTF-8 cannot
    ("tenant", "shop\x07"),
    ("camera_id", "c" * 201),  # the API's 200-character bound
])
def test_bad_id_is_refused_naming_the_field(base: Path, field: str, value: str) -> None:
    with pytest.raises(ManifestError, match=field):
        parse_line(_line(**{field: value}), base)


def test_control_character_in_the_image_path_is_refused(base: Path) -> None:
    with pytest.raises(ManifestError, match="'image'"):
        parse_line(_line(image="a.jpg\x00.png"), base)


def test_printable_image_ids_are_kept(base: Path) -> None:
    frame = parse_line(_line(camera_id="caisse-2.entree", image_id="x/ü 1"), base)
    assert (frame.camera_id, frame.image_id) == ("caisse-2.entree", "x/ü 1")


@pytest.mark.parametrize(("field", "value"), [
    ("location_id", "Berlin, Mitte"),  # a report's --locations list could never name it
    ("camera_id", "Caisse 2 – entrée"),
    ("tenant", "a/b"),
    ("location_id", "L" * 65),
])
def test_places_and_cameras_follow_the_id_rule_of_the_registry(
        base: Path, field: str, value: str) -> None:
    """As admin commands, the API and ingest-video name them: letters, digits, _ . -"""
    with pytest.raises(ManifestError, match=f"{field}.*letters, digits"):
        parse_line(_line(**{field: value}), base)


def test_read_manifest_names_line_and_field(base: Path) -> None:
    manifest = base / "m.jsonl"
    manifest.write_text("\n".join([_line(), _line(camera_id="c\x00x"), _line(image_id="b")])
                        + "\n")
    out = list(read_manifest(manifest))
    assert [type(o) for o in out] == [Frame, Rejected, Frame]
    bad = out[1]
    assert bad.source == f"{manifest}:2"
    assert "'camera_id'" in bad.reason and "\\x00" in bad.reason


def test_an_image_path_that_is_no_regular_file_or_too_large_is_refused_unread(
        base: Path) -> None:
    """A device (/dev/zero never ends), a folder, or a video named by mistake is refused
    by its line before it is read: reading it whole once took all memory."""
    (base / "big.jpg").write_bytes(b"\xff\xd8\xff" + bytes(5000))
    lines = [_line(image="/dev/zero"), _line(image="."), _line(image="big.jpg"),
             _line(image="a.jpg")]
    manifest = base / "m.jsonl"
    manifest.write_text("\n".join(lines) + "\n")
    out = list(read_manifest(manifest, max_bytes=4096))
    assert [type(o) for o in out] == [Rejected, Rejected, Rejected, Frame]
    assert "not a regular file" in out[0].reason and "/dev/zero" in out[0].reason
    assert "not a regular file" in out[1].reason
    assert "5003 bytes; at most 4096" in out[2].reason


def test_a_manifest_takes_the_formats_every_entry_point_takes(tmp_path: Path) -> None:
    """`revisit ingest` decodes what the API and the agent take (a TIFF) and refuses what
    they refuse in their words, naming line and file (an AVIF, a GIF)."""
    from tests.conftest import lfw_still

    from revisit.vision import decode

    for name, fmt in (("night.tif", "TIFF"), ("phone.avif", "AVIF"), ("anim.gif", "GIF")):
        (tmp_path / name).write_bytes(lfw_still("Colin_Powell", 1, fmt))
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("\n".join(_line(image=n) for n in ("night.tif", "phone.avif",
                                                           "anim.gif")) + "\n")
    out = [decode(f, max_pixels=100_000_000) for f in read_manifest(manifest)]
    assert getattr(out[0], "shape", None) == (250, 250, 3)
    for r, (line, name, fmt) in zip(out[1:], ((2, "phone.avif", "AVIF"), (3, "anim.gif", "GIF")),
                                    strict=True):
        assert isinstance(r, Rejected) and r.source == f"{manifest}:{line} ({tmp_path / name})"
        assert r.reason == f"{fmt} is not a supported image format (accepted: JPEG, PNG, WebP, BMP, TIFF)"
