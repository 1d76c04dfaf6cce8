"""Retention: what a purge deletes, written once for every SQL store."""

from __future__ import annotations

from datetime import datetime
from typing import Any


def purge_statements(tenant: str, cutoff: datetime, param: str = "?"
                     ) -> list[tuple[str, str, list[Any]]]:
    """(name, SQL, parameters) of the retention deletes, in order: embeddings of old
    sightings, old sightings, old exemplars, then visitors left with no sighting (neither
    their own nor one of an id merged into them). ``param`` is the driver's placeholder."""
    p = param
    return [
        ("embeddings", f"DELETE FROM embeddings WHERE tenant = {p} AND face_image_id IN ("
         f"SELECT face_image_id FROM sightings WHERE tenant = {p} AND ts < {p})",
         [tenant, tenant, cutoff]),
        ("sightings", f"DELETE FROM sightings WHERE tenant = {p} AND ts < {p}", [tenant, cutoff]),
        ("exemplars", f"DELETE FROM exemplars WHERE tenant = {p} AND ts < {p}", [tenant, cutoff]),
        ("visitors", f"DELETE FROM visitors v WHERE v.tenant = {p} AND NOT EXISTS ("
         "SELECT 1 FROM sightings s WHERE s.tenant = v.tenant AND s.face_id = v.visitor_id) "
         "AND NOT EXISTS (SELECT 1 FROM aliases a JOIN sightings s ON s.tenant = a.tenant "
         "AND s.face_id = a.alias_id WHERE a.tenant = v.tenant AND a.visitor_id = v.visitor_id)",
         [tenant]),
    ]
