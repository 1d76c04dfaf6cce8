"""The stages of the distributed mode, the queues between them, and batch sequence ids."""

from __future__ import annotations

import re
from typing import Any

from revisit.records import Batch

STAGES = ("detect", "embed", "resolve", "store")
QUEUE_IN = {"detect": "frames", "embed": "faces", "resolve": "embeddings", "store": "sightings"}
QUEUE_OUT: dict[str, str | None] = {
    "detect": "faces", "embed": "embeddings", "resolve": "sightings", "store": None,
}
QUEUE_BOUND = 64  # batches per inter-stage queue: back-pressure without starving workers
_SEQ_RE = re.compile(r"^(?P<stream>.+)#(?P<seq>\d+)$")


def sequence_of(batch_id: str) -> tuple[str | None, int]:
    """``"s-ab12#000000042"`` -> ("s-ab12", 42); unsequenced ids -> (None, -1)."""
    m = _SEQ_RE.match(batch_id)
    return (m["stream"], int(m["seq"])) if m else (None, -1)


def tenants_of(batch: Batch) -> list[str]:
    items: list[Any] = [*batch.frames, *batch.faces, *batch.sightings]
    return sorted({i.tenant for i in items})
