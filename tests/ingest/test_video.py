"""Video input: a damaged file gives what it holds, and says what it lost."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2
import numpy as np
import pytest

from revisit.ingest.video import VideoError, sample_video

START = datetime(2024, 1, 5, 9, tzinfo=UTC)


def _avi(path: Path, frames: int, fps: float = 1.0) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (64, 48))
    assert writer.isOpened()
    rng = np.random.default_rng(0)
    for _ in range(frames):
        writer.write(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    writer.release()
    return path


def _sample(path: Path) -> list:
    return list(sample_video(str(path), camera_id="c1", location_id="101",
                             every=timedelta(seconds=1), start=START))


def test_a_truncated_video_is_ingested_as_far_as_it_goes_with_a_warning(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    whole = _avi(tmp_path / "whole.avi", 10)
    with caplog.at_level("WARNING", logger="revisit.ingest.video"):
        assert len(_sample(whole)) == 10
    assert not caplog.records
    cut = tmp_path / "cut.avi"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with caplog.at_level("WARNING", logger="revisit.ingest.video"):
        got = _sample(cut)
    assert 0 < len(got) < 10
    assert f"read {len(got)} of the 10 frames" in caplog.text and "cut.avi" in caplog.text


def test_a_file_that_is_no_video_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypisom" + bytes(2000))
    with pytest.raises(VideoError, match="cannot open video"):
        _sample(bad)


def test_sampling_stops_when_asked_at_any_frame_read(tmp_path: Path) -> None:
    """The stop is seen at every frame read, not only at the sampled ones: a stream
    sampled once a minute must not take a minute to stop on SIGTERM."""
    stop = threading.Event()
    frames = sample_video(str(_avi(tmp_path / "v.avi", 8)), camera_id="c1", location_id="101",
                          every=timedelta(seconds=1), start=START, stop=stop)
    assert next(frames) is not None
    stop.set()
    assert list(frames) == []


def test_a_still_image_is_refused_as_a_video_and_a_gif_animation_is_read(
        tmp_path: Path) -> None:
    """OpenCV reads a still (JPEG, TIFF, AVIF, ...) as a one-frame video, past the pixel
    bound and the one list of formats; ingest-video refuses it, an AVIF in the words every
    entry point uses. An animated GIF is what it holds: frames."""
    from PIL import Image
    from tests.conftest import lfw_still

    for name, fmt in (("night.tif", "TIFF"), ("door.jpg", "JPEG")):
        (tmp_path / name).write_bytes(lfw_still("Colin_Powell", 1, fmt))
        with pytest.raises(VideoError, match=f"is a {fmt} still image, not a video"):
            _sample(tmp_path / name)
    (tmp_path / "phone.avif").write_bytes(lfw_still("Colin_Powell", 1, "AVIF"))
    with pytest.raises(VideoError) as err:
        _sample(tmp_path / "phone.avif")
    assert str(err.value) == (f"{tmp_path / 'phone.avif'}: AVIF is not a supported image "
                              "format (accepted: JPEG, PNG, WebP, BMP, TIFF)")
    frames = [Image.fromarray(np.full((48, 64, 3), v, np.uint8)) for v in (0, 255)]
    frames[0].save(tmp_path / "clip.gif", save_all=True, append_images=frames[1:],
                   duration=1000)
    assert len(_sample(tmp_path / "clip.gif")) == 2
