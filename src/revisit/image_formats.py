"""The still-image formats revisit takes, one list for every way a snapshot arrives.

The HTTP batch and enrolment APIs, manifests (``revisit ingest``), ``revisit known enrol``
and the agent's ``--folder`` all take these formats and refuse any other with one message
(:func:`refusal`); ``ingest-video`` and the agent's ``--video`` refuse a still image (read
as a one-frame video it would escape the list and the pixel bound). A format is listed when
every OpenCV this project allows decodes it and its width and height can be read from its
header before decoding (:mod:`revisit.vision.header`): AVIF is left out because not every
OpenCV build decodes it and its size lies in nested boxes; GIF because OpenCV decodes it
only from 4.12; BigTIFF because a snapshot never needs it.
"""

from __future__ import annotations

import re

ACCEPTED_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "WebP", "BMP", "TIFF")
ACCEPTED = ", ".join(ACCEPTED_FORMATS)

# the file names the agent's --folder takes as snapshots of an accepted format
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"})
# still images a camera may write in another format: the agent names them, not sends them
OTHER_IMAGE_SUFFIXES = frozenset({
    ".gif", ".avif", ".heic", ".heif", ".jxl", ".jp2", ".j2k", ".pbm", ".pgm", ".ppm",
    ".pnm", ".pfm", ".hdr", ".exr", ".ras", ".sr"})

_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"BM", "BMP"),
    # known, and refused: named in the refusal
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"II+\x00", "BigTIFF"),
    (b"MM\x00+", "BigTIFF"),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "JPEG 2000"),
    (b"\xff\x4f\xff\x51", "JPEG 2000"),
    (b"\x00\x00\x00\x0cJXL \r\n\x87\n", "JPEG XL"),
    (b"\xff\x0a", "JPEG XL"),
    (b"#?RADIANCE", "Radiance HDR"),
    (b"#?RGBE", "Radiance HDR"),
    (b"v/1\x01", "OpenEXR"),
    (b"\x59\xa6\x6a\x95", "Sun raster"),
)
# ISO base media files (an MP4 too) say what they hold in their first box's brand
_BRANDS = {b"avif": "AVIF", b"avis": "AVIF", b"heic": "HEIF", b"heix": "HEIF",
           b"heim": "HEIF", b"heis": "HEIF", b"hevc": "HEIF", b"hevx": "HEIF",
           b"mif1": "HEIF", b"msf1": "HEIF"}
_NETPBM = re.compile(rb"P[1-7Ff]\s")


def still_format(head: bytes) -> str | None:
    """The still-image format the first bytes of a file announce, accepted or not
    (``"JPEG"``, ``"AVIF"``, ...), or None for anything else (a video, text)."""
    for magic, name in _SIGNATURES:
        if head.startswith(magic):
            return name
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "WebP"
    if head[4:8] == b"ftyp" and head[8:12] in _BRANDS:
        return _BRANDS[head[8:12]]
    if _NETPBM.match(head):
        return "PFM" if head[1:2] in b"Ff" else "PNM"
    return None


def refusal(data: bytes) -> str:
    """Why ``data``, in no accepted format, is not taken: the words every entry point uses
    (the caller names the file). What a file holds is never repeated: a manifest may name
    any file the reader can read."""
    fmt = still_format(data)
    if fmt is not None and fmt not in ACCEPTED_FORMATS:
        return f"{fmt} is not a supported image format (accepted: {ACCEPTED})"
    if not data:
        return "empty file"
    kind = "text" if all(32 <= b < 127 or b in b"\t\r\n" for b in data[:64]) else "data"
    return (f"not a supported image (accepted: {ACCEPTED}): its {len(data)} bytes start "
            f"like {kind}, with no image signature")
