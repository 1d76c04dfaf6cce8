"""Image dimensions read from the header alone, before any decoding (bombs are refused
without allocating their pixels), for every format the API takes."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from revisit.vision.header import ImageError, image_size


@pytest.mark.parametrize(("ext", "params", "fmt"), [
    (".jpg", [], "JPEG"), (".png", [], "PNG"), (".bmp", [], "BMP"),
    (".webp", [cv2.IMWRITE_WEBP_QUALITY, 80], "WebP"),  # lossy: VP8
    (".webp", [cv2.IMWRITE_WEBP_QUALITY, 101], "WebP"),  # lossless: VP8L
])
def test_dimensions_from_the_header(ext: str, params: list[int], fmt: str) -> None:
    data = cv2.imencode(ext, np.zeros((37, 53, 3), np.uint8), params)[1].tobytes()
    assert image_size(data) == (fmt, 53, 37)


def test_a_webp_claiming_a_huge_canvas_is_read_not_decoded() -> None:
    # an extended (VP8X) header declaring 16384 x 16384, and no image data at all
    head = b"VP8X" + (10).to_bytes(4, "little") + bytes(4) \
        + (16383).to_bytes(3, "little") + (16383).to_bytes(3, "little")
    data = b"RIFF" + (len(head) + 4).to_bytes(4, "little") + b"WEBP" + head
    assert image_size(data) == ("WebP", 16384, 16384)


@pytest.mark.parametrize("data", [b"", b"GIF89a....", b"RIFF\x00\x00\x00\x00WEBPJUNK" + bytes(20),
                                  b"II+\x00\x08\x00\x00\x00"])  # BigTIFF
def test_what_is_not_an_image_is_named(data: bytes) -> None:
    with pytest.raises(ImageError):
        image_size(data)


def _tiff(order: str, width: int, height: int, kind: int) -> bytes:
    """A TIFF header alone: one directory holding width and height as SHORT (3) or LONG (4)."""
    import struct

    pack = struct.Struct(order + "HHII" if kind == 4 else order + "HHIHxx")
    entries = [pack.pack(256, kind, 1, width), pack.pack(257, kind, 1, height)]
    return ((b"II*\x00" if order == "<" else b"MM\x00*") + struct.pack(order + "IH", 8, 2)
            + b"".join(entries) + bytes(4))


@pytest.mark.parametrize(("order", "kind"), [("<", 3), (">", 3), ("<", 4), (">", 4)])
def test_a_tiff_size_comes_from_its_first_directory(order: str, kind: int) -> None:
    """TIFF is accepted everywhere, so its size bounds it like the others' (a 60000 x 60000
    TIFF of a few bytes is read, not decoded)."""
    w = 60000 if kind == 4 else 600
    assert image_size(_tiff(order, w, 40000 if kind == 4 else 400, kind)) == (
        "TIFF", w, 40000 if kind == 4 else 400)


def test_real_tiffs_of_every_compression_are_read() -> None:
    from tests.conftest import lfw_still

    for params in ({}, {"compression": "tiff_lzw"}, {"compression": "jpeg"},
                   {"compression": "tiff_adobe_deflate"}):
        assert image_size(lfw_still("Colin_Powell", 1, "TIFF", **params)) == ("TIFF", 250, 250)


@pytest.mark.parametrize("data", [b"II*\x00" + bytes(4), b"II*\x00\x08\x00\x00\x00\x05\x00",
                                  b"MM\x00*\x00\x00\x00\x08\x00\x00"])
def test_a_tiff_without_a_readable_size_is_refused(data: bytes) -> None:
    with pytest.raises(ImageError, match="TIFF"):
        image_size(data)


@pytest.mark.parametrize(("fmt", "named"), [("AVIF", "AVIF"), ("GIF", "GIF"),
                                            ("JPEG2000", "JPEG 2000"), ("PPM", "PNM")])
def test_a_format_not_accepted_is_named_with_the_accepted_ones(fmt: str, named: str) -> None:
    from tests.conftest import lfw_still

    with pytest.raises(ImageError) as err:
        image_size(lfw_still("Colin_Powell", 1, fmt))
    assert str(err.value) == (f"{named} is not a supported image format "
                              "(accepted: JPEG, PNG, WebP, BMP, TIFF)")
