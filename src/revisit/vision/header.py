"""Image checks before anything is decoded: format and dimensions from the header alone.

A 100 kB JPEG can declare 60000 x 60000 pixels and make a decoder allocate 10 GB; reading
the dimensions from the header first (JPEG SOF, PNG IHDR, WebP VP8/VP8L/VP8X, BMP info
header, the first TIFF directory, which is the page OpenCV decodes) lets the API refuse it
with a 413 without ever decoding it, and the detect stage refuse it for every input
(:func:`revisit.vision.stages.decode`). Every format of
:data:`revisit.image_formats.ACCEPTED_FORMATS` is read here, and only those.
"""

from __future__ import annotations

import struct

from revisit.image_formats import refusal

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
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return ("WebP", *_webp_size(data))
    if data.startswith(b"BM") and len(data) >= 26:
        w, h = struct.unpack("<ii", data[18:26])
        if w <= 0 or h == 0:
            raise ImageError("corrupt BMP: zero or negative width or height")
        return "BMP", w, abs(h)  # a negative height is a top-down bitmap
    if data.startswith((b"II*\x00", b"MM\x00*")):
        return ("TIFF", *_tiff_size(data))
    raise ImageError(refusal(data))


def _tiff_size(data: bytes) -> tuple[int, int]:
    """ImageWidth (256) and ImageLength (257) of the first image directory."""
    order = "<" if data[:2] == b"II" else ">"
    n = len(data)
    ifd = struct.unpack(order + "I", data[4:8])[0] if n >= 8 else 0
    if ifd < 8 or ifd + 2 > n:
        raise ImageError("corrupt or truncated TIFF: no image directory")
    count = struct.unpack(order + "H", data[ifd:ifd + 2])[0]
    size: dict[int, int] = {}
    for at in range(ifd + 2, ifd + 2 + 12 * count, 12):
        if at + 12 > n:
            raise ImageError("corrupt or truncated TIFF: its image directory is cut short")
        tag, kind = struct.unpack(order + "HH", data[at:at + 4])
        if tag in (256, 257):
            if kind == 3:  # SHORT, in the first two bytes of the value field
                size[tag] = struct.unpack(order + "H", data[at + 8:at + 10])[0]
            elif kind == 4:  # LONG
                size[tag] = struct.unpack(order + "I", data[at + 8:at + 12])[0]
            else:
                raise ImageError("corrupt TIFF: width or height of a type neither SHORT nor LONG")
            if len(size) == 2:
                break
    w, h = size.get(256, 0), size.get(257, 0)
    if w == 0 or h == 0:
        raise ImageError("corrupt TIFF: no width or height in its first image directory")
    return w, h


def _webp_size(data: bytes) -> tuple[int, int]:
    """From the first chunk: VP8X (extended), VP8 (lossy) or VP8L (lossless)."""
    chunk = data[12:16]
    if chunk == b"VP8X" and len(data) >= 30:
        w = int.from_bytes(data[24:27], "little") + 1
        h = int.from_bytes(data[27:30], "little") + 1
    elif chunk == b"VP8 " and len(data) >= 30 and data[23:26] == b"\x9d\x01\x2a":
        w, h = (v & 0x3FFF for v in struct.unpack("<HH", data[26:30]))
    elif chunk == b"VP8L" and len(data) >= 25 and data[20] == 0x2F:
        bits = int.from_bytes(data[21:25], "little")
        w, h = (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    else:
        raise ImageError("corrupt WebP: no VP8, VP8L or VP8X header")
    if w == 0 or h == 0:
        raise ImageError("corrupt WebP: zero width or height")
    return w, h


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
