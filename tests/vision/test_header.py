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


@pytest.mark.parametrize("data", [b"", b"GIF89a....", b"RIFF\x00\x00\x00\x00WEBPJUNK" + bytes(20)])
def test_what_is_not_an_image_is_named(data: bytes) -> None:
    with pytest.raises(ImageError):
        image_size(data)
