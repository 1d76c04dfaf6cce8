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


def test_a_video_of_frames_over_the_pixel_bound_is_refused_before_it_is_read(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A video's frames are decoded whatever their size: one over ``ingest.max_pixels`` is
    refused by the size its header declares, before a frame is read, and by a decoded
    frame's size where the header says none."""
    clip = _avi(tmp_path / "v.avi", 4)
    grabs: list[int] = []
    real = cv2.VideoCapture

    class Capture:
        """OpenCV's capture, counting the frames read, its header's size hidden at will."""

        sized = True

        def __init__(self, source: str) -> None:
            self.cap = real(source)

        def __getattr__(self, name: str) -> object:
            return getattr(self.cap, name)

        def get(self, prop: int) -> float:
            if not self.sized and prop in (cv2.CAP_PROP_FRAME_WIDTH, cv2.CAP_PROP_FRAME_HEIGHT):
                return 0.0
            return self.cap.get(prop)

        def grab(self) -> bool:
            grabs.append(1)
            return self.cap.grab()

    monkeypatch.setattr(cv2, "VideoCapture", Capture)
    sample = sample_video(str(clip), camera_id="c1", location_id="101", start=START,
                          every=timedelta(seconds=1), max_pixels=3071)
    with pytest.raises(VideoError) as err:
        next(sample)
    assert str(err.value) == f"{clip}: frames of 64x48 = 3072 pixels; at most 3071 " \
                             "(ingest.max_pixels)"
    assert grabs == []
    Capture.sized = False
    with pytest.raises(VideoError, match="64x48 = 3072 pixels; at most 3071"):
        list(sample_video(str(clip), camera_id="c1", location_id="101", start=START,
                          every=timedelta(seconds=1), max_pixels=3071))
    assert len(grabs) == 1
    assert len(list(sample_video(str(clip), camera_id="c1", location_id="101", start=START,
                                 every=timedelta(seconds=1), max_pixels=3072))) == 4
    monkeypatch.undo()
    from typer.testing import CliRunner

    from revisit.cli.main import app

    for cmd in (["ingest-video", str(clip), "--location", "101"],
                ["agent", "--server", "http://127.0.0.1:9", "--key", "k", "--video", str(clip),
                 "--drain-timeout", "0", "--spool", str(tmp_path / "sp")]):
        r = CliRunner().invoke(app, ["--data", str(tmp_path / "d"), *cmd, "--camera", "c1",
                                     "--start", "2024-01-05T09:00:00Z"],
                               env={"REVISIT_INGEST__MAX_PIXELS": "3071"})
        assert r.exit_code == 2 and "Traceback" not in r.output, r.output
        assert "64x48 = 3072 pixels; at most 3071" in r.output, r.output


def test_only_a_video_file_or_a_stream_is_read(tmp_path: Path) -> None:
    """OpenCV reads ``frames/%04d.jpg`` as a video of the stills it names (past the checks
    every still meets) and a device as a camera: a video is a regular file or a URL."""
    from tests.conftest import lfw_still
    from typer.testing import CliRunner

    from revisit.cli.main import app

    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(3):
        (frames / f"{i:04d}.jpg").write_bytes(lfw_still("Colin_Powell", 1, "JPEG"))
    pattern = str(frames / "%04d.jpg")
    with pytest.raises(VideoError, match="an image-sequence pattern is not read"):
        _sample(Path(pattern))
    with pytest.raises(VideoError, match="is not a regular file"):
        _sample(frames)
    for cmd in (["ingest-video", pattern, "--location", "101"],
                ["agent", "--server", "http://127.0.0.1:9", "--key", "k", "--video", pattern,
                 "--start", "2024-01-05T09:00:00Z", "--spool", str(tmp_path / "sp")]):
        r = CliRunner().invoke(app, ["--data", str(tmp_path / "d"), *cmd, "--camera", "c1"])
        assert r.exit_code == 2 and "Traceback" not in r.output, r.output
        assert "image-sequence pattern is not read" in " ".join(
            r.output.replace("│", " ").split()), r.output
