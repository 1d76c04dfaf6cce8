"""What a processed batch reports (its status record)."""

from __future__ import annotations

from revisit.ingest.status import counts_of
from revisit.records import Batch, Rejected


def test_a_frame_refused_in_processing_names_the_uploaded_file() -> None:
    """An API frame's default image id is a content hash: the sender needs the part name
    to know which image was refused. Manifest frames have no upload name to give."""
    b = Batch("b1", rejected=[
        Rejected("batch:door-0930.jpg", "corrupt or truncated JPEG (6055 bytes)", "I-dd0f93"),
        Rejected("manifest.jsonl:4 (cam/x.jpg)", "no image data", "I-aa01"),
    ])
    assert counts_of(b)["rejected"] == [
        {"image_id": "I-dd0f93", "reason": "corrupt or truncated JPEG (6055 bytes)",
         "file": "door-0930.jpg"},
        {"image_id": "I-aa01", "reason": "no image data"},
    ]
