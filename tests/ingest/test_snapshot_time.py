"""Where the agent's --folder takes a snapshot's time from (docs/service.md, agent)."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from revisit.ingest.agent import AgentStats, folder_snapshots, snapshot_time

PIL = pytest.importorskip("PIL")
from PIL import Image  # noqa: E402

BERLIN = ZoneInfo("Europe/Berlin")


def _jpeg(path: Path, exif_time: str | None = None, offset: str | None = None) -> Path:
    img = Image.fromarray(np.zeros((8, 8, 3), np.uint8))
    exif = Image.Exif()
    if exif_time is not None:
        ifd = exif.get_ifd(0x8769)
        ifd[36867] = exif_time
        if offset is not None:
            ifd[36881] = offset
    img.save(path, exif=exif)
    return path


@pytest.mark.parametrize(("name", "want"), [
    ("cam1_20240105T093000", datetime(2024, 1, 5, 8, 30, tzinfo=UTC)),  # Berlin, winter
    ("2024-07-05_09-30-00", datetime(2024, 7, 5, 7, 30, tzinfo=UTC)),  # Berlin, summer
    ("snap-20240105_093000Z", datetime(2024, 1, 5, 9, 30, tzinfo=UTC)),
    ("20240105T093000+0530", datetime(2024, 1, 5, 4, 0, tzinfo=UTC)),
    ("us_20240105T093000-0500", datetime(2024, 1, 5, 14, 30, tzinfo=UTC)),
    # a trailing counter is not an offset; milliseconds are read
    ("cam1_2025-03-16_09-30-00-0001", datetime(2025, 3, 16, 8, 30, tzinfo=UTC)),
    ("cam1_2025-03-16_09-30-00-1234", datetime(2025, 3, 16, 8, 30, tzinfo=UTC)),
    # ... nor one that reads like an offset: after a time with separators (its offset
    # would have a colon), or one no zone uses
    ("cam1_2025-03-16_09-30-00-0100", datetime(2025, 3, 16, 8, 30, tzinfo=UTC)),
    ("cam1_2025-03-16_09-30-00-1200", datetime(2025, 3, 16, 8, 30, tzinfo=UTC)),
    ("cam_20240105T093000-0030", datetime(2024, 1, 5, 8, 30, tzinfo=UTC)),
    ("cam_20240105T093000+0215", datetime(2024, 1, 5, 8, 30, tzinfo=UTC)),
    ("2024-01-05T09-30-00-05-00", datetime(2024, 1, 5, 8, 30, tzinfo=UTC)),
    ("2024-01-05 09:30:00-05:00", datetime(2024, 1, 5, 14, 30, tzinfo=UTC)),
    ("20240105T093000+0545", datetime(2024, 1, 5, 3, 45, tzinfo=UTC)),
    # real offsets: Newfoundland's summer time, and %z's form after an extended time
    ("20240705T093000-0230", datetime(2024, 7, 5, 12, 0, tzinfo=UTC)),
    ("2024-07-05T09:30:00-02:30", datetime(2024, 7, 5, 12, 0, tzinfo=UTC)),
    ("2024-01-05T09:30:00-0500", datetime(2024, 1, 5, 14, 30, tzinfo=UTC)),
    ("cam1_2024-01-05_09-30-00+0300", datetime(2024, 1, 5, 6, 30, tzinfo=UTC)),
    ("20240105093000123", datetime(2024, 1, 5, 8, 30, 0, 123000, tzinfo=UTC)),
])
def test_time_from_the_name(tmp_path: Path, name: str, want: datetime) -> None:
    assert snapshot_time(_jpeg(tmp_path / f"{name}.jpg"), "name", BERLIN) == want


def test_time_from_exif_with_and_without_offset(tmp_path: Path) -> None:
    plain = _jpeg(tmp_path / "a.jpg", "2024:01:05 09:30:00")
    assert snapshot_time(plain, "exif", BERLIN) == datetime(2024, 1, 5, 8, 30, tzinfo=UTC)
    with_offset = _jpeg(tmp_path / "b.jpg", "2024:01:05 09:30:00", "-03:00")
    assert snapshot_time(with_offset, "exif", BERLIN) == datetime(2024, 1, 5, 12, 30, tzinfo=UTC)
    blank = _jpeg(tmp_path / "c.jpg", "2024:01:05 09:30:00", "      ")  # the standard allows it
    assert snapshot_time(blank, "exif", BERLIN) == datetime(2024, 1, 5, 8, 30, tzinfo=UTC)
    bad = _jpeg(tmp_path / "d.jpg", "2024:01:05 09:30:00", "+99:99")
    with pytest.raises(ValueError, match=r"d\.jpg: '\+99:99' is not a UTC offset"):
        snapshot_time(bad, "exif", BERLIN)


def test_time_from_mtime_and_files_without_a_time_are_skipped(tmp_path: Path) -> None:
    when = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
    a = _jpeg(tmp_path / "a.jpg")
    os.utime(a, (when.timestamp(), when.timestamp()))
    assert snapshot_time(a, "mtime") == when
    with pytest.raises(ValueError, match=r"a\.jpg"):
        snapshot_time(a, "exif")
    with pytest.raises(ValueError, match="no timestamp"):
        snapshot_time(a, "name")
    _jpeg(tmp_path / "20240301T130000.jpg")
    frames = list(folder_snapshots(tmp_path, "c1", time_from="name",
                                   zone=timezone(timedelta(hours=1))))
    assert [f.ts for f in frames] == [when]  # a.jpg has no time in its name: skipped


def test_one_instant_is_one_snapshot_whatever_its_offset() -> None:
    from revisit.ingest.video import frame_image_id

    utc = datetime(2024, 5, 2, 8, 0, tzinfo=UTC)
    berlin = utc.astimezone(timezone(timedelta(hours=2)))
    assert berlin.isoformat() != utc.isoformat()
    assert frame_image_id("t", "c1", berlin) == frame_image_id("t", "c1", utc)
    assert frame_image_id("t", "c1", utc) != frame_image_id("t", "c2", utc)


def test_two_files_of_one_second_are_two_snapshots(tmp_path: Path) -> None:
    """Long names that share their first 40 characters (channel, date, time) and differ in
    a counter: two ids, whatever the clock says."""
    stem = "entrance_camera_snapshot_channel01_2025-03-18_10-00-00"
    for n in ("001", "002"):
        _jpeg(tmp_path / f"{stem}_{n}.jpg")
        os.utime(tmp_path / f"{stem}_{n}.jpg", (1_742_292_000, 1_742_292_000))
    a, b = folder_snapshots(tmp_path, "c1")
    assert a.ts == b.ts and a.image_id != b.image_id
    assert len(a.image_id) <= 64


def test_without_a_zone_the_machine_zone_applies_its_offset_at_that_time(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No --timezone: a winter and a summer file of a Berlin machine are read at +01:00
    and +02:00 whatever the season the agent runs in (not today's offset for both)."""
    import time

    monkeypatch.setenv("TZ", "Europe/Berlin")
    time.tzset()
    try:
        winter = _jpeg(tmp_path / "cam1_20240105T093000.jpg")
        summer = _jpeg(tmp_path / "cam1_20240705T093000.jpg")
        assert snapshot_time(winter, "name") == datetime(2024, 1, 5, 8, 30, tzinfo=UTC)
        assert snapshot_time(summer, "name") == datetime(2024, 7, 5, 7, 30, tzinfo=UTC)
        exif = _jpeg(tmp_path / "e.jpg", "2024:07:05 09:30:00")
        assert snapshot_time(exif, "exif") == datetime(2024, 7, 5, 7, 30, tzinfo=UTC)
    finally:
        monkeypatch.undo()
        time.tzset()


def test_an_entry_that_is_no_readable_file_is_skipped_not_fatal(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A folder or a dangling link named *.jpg (a file removed by a camera's rotation
    between the listing and the read reads the same) is skipped with a warning naming it:
    the files after it in name order are still taken, in this run and in the next."""
    (tmp_path / "a_dir.jpg").mkdir()
    (tmp_path / "b_gone.jpg").symlink_to(tmp_path / "nowhere.jpg")
    _jpeg(tmp_path / "c.jpg")
    with caplog.at_level("WARNING", logger="revisit.ingest.agent"):
        frames = list(folder_snapshots(tmp_path, "c1", skip=set()))
    assert [Path(f.source).name for f in frames] == ["c.jpg"]
    assert "a_dir.jpg" in caplog.text and "b_gone.jpg" in caplog.text


def test_files_of_one_second_differing_only_in_extension_are_two_snapshots(
        tmp_path: Path) -> None:
    for name, fmt in (("snap.jpg", "JPEG"), ("snap.png", "PNG"), ("snap.webp", "WEBP")):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / name, fmt)
        os.utime(tmp_path / name, (1_742_292_000, 1_742_292_000))
    frames = list(folder_snapshots(tmp_path, "c1"))
    assert len({f.ts for f in frames}) == 1
    assert len({f.image_id for f in frames}) == 3
    assert frames[0].image_id.endswith("-snap")  # the first keeps the id it always had


def test_a_file_alone_with_its_stem_keeps_the_id_it_always_had(tmp_path: Path) -> None:
    """Ids hold the stem whatever the extension's case or kind (a --resend after an
    upgrade must find the snapshots stored, not store them again)."""
    for name, fmt in (("a.JPG", "JPEG"), ("b.jpeg", "JPEG"), ("c.png", "PNG")):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / name, fmt)
    (tmp_path / "d.heic").write_bytes(b"\x00\x00\x00\x18ftypheic" + bytes(64))
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "d.png", "PNG")
    ids = [f.image_id.rsplit("-", 1)[1] for f in folder_snapshots(tmp_path, "c1")]
    assert ids == ["a", "b", "c", "d"]  # an unsent d.heic takes nothing from d.png


def test_images_the_server_does_not_take_are_named_not_silently_ignored(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A camera set to AVIF or HEIC sent nothing, and the agent said nothing about it; one
    set to TIFF was refused here while the server's manifest input took it. The one list of
    formats decides by content, in the words of every entry point, and the summary counts
    what was not sent and what was left alone."""
    from tests.conftest import lfw_still

    (tmp_path / "night.tif").write_bytes(lfw_still("Colin_Powell", 1, "TIFF"))
    (tmp_path / "phone.heic").write_bytes(b"\x00\x00\x00\x18ftypheic" + bytes(64))
    (tmp_path / "cam.avif").write_bytes(lfw_still("Colin_Powell", 1, "AVIF"))
    (tmp_path / "misnamed.jpg").write_bytes(lfw_still("Colin_Powell", 1, "GIF"))
    (tmp_path / "notes.txt").write_text("camera log")
    (tmp_path / "sub").mkdir()  # a folder: neither a snapshot nor a file left alone
    _jpeg(tmp_path / "ok.jpg")
    seen: set[str] = set()
    stats = AgentStats()
    with caplog.at_level("WARNING", logger="revisit.ingest.agent"):
        frames = list(folder_snapshots(tmp_path, "c1", skip=seen, stats=stats))
        again = list(folder_snapshots(tmp_path, "c1", skip=seen, stats=stats))  # watched
    assert [Path(f.source).name for f in frames] == ["night.tif", "ok.jpg"] and again == []
    accepted = "(accepted: JPEG, PNG, WebP, BMP, TIFF)"
    assert f"not sending cam.avif: AVIF is not a supported image format {accepted}" in caplog.text
    assert f"not sending phone.heic: HEIF is not a supported image format {accepted}" in caplog.text
    assert f"not sending misnamed.jpg: GIF is not a supported image format {accepted}" in caplog.text
    assert caplog.text.count("cam.avif") == 1  # said once per watch, not every pass
    assert (stats.files_refused, stats.files_ignored, stats.ignored_names) == (3, 1, ["notes.txt"])
