"""Image checks before anything is decoded: format and dimensions from the header alone.

A 100 kB JPEG can declare 60000 x 60000 pixels and make a decoder allocate 10 GB; reading
the dimensions from the SOF / IHDR header first lets the API refuse it with a 413 without
ever decoding it.
"""

from __future__ import annotations

import struct

# JPEG start-of-frame markers carrying the dimensions (not DHT C4, JPG C8, DAC CC).
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


class ImageError(ValueError):
    """Not an acceptable image; ``reason`` says why in words an operator can act on."""


def image_size(data: bytes) -> tuple[str, int, int]:
    """(format, width, height) from the header; ImageError for anything else."""
    if data.startswith(b"\xff\xd8\xff"):
        return ("JPEG", *_jpeg_size(data))
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        if len(data) < 24 or data[12:16] != b"IHDR":
            raise ImageError("corrupt PNG: no IHDR header")
        w, h = struct.unpack(">II", data[16:24])
        if w == 0 or h == 0:
            raise ImageError("corrupt PNG: zero width or height")
        return "PNG", w, h
    if not data:
        raise ImageError("empty file")
    raise ImageError(f"not a JPEG or PNG (first bytes {data[:8]!r})")


def _jpeg_size(data: bytes) -> tuple[int, int]:
    i = 2
    n = len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            raise ImageError(f"corrupt JPEG: expected a marker at byte {i}")
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # no length
            i += 2
            continue
        if marker == 0xD9 or marker == 0xDA:
            break  # end of image / start of scan before any SOF
        seg = struct.unpack(">H", data[i + 2:i + 4])[0]
        if seg < 2:
            raise ImageError("corrupt JPEG: bad segment length")
        if marker in _SOF:
            if i + 9 > n:
                break
            h, w = struct.unpack(">HH", data[i + 5:i + 9])
            if w == 0 or h == 0:
                raise ImageError("corrupt JPEG: zero width or height")
            return w, h
        i += 2 + seg
    raise ImageError("corrupt or truncated JPEG: no frame header")
