"""The store's tables: one migration list for every engine, rendered by its dialect.

Conventions:
- every table carries ``tenant``; keys are (tenant, natural id);
- timestamps are UTC ``TIMESTAMP`` (no zone): converted on the way in and out, so the
  session time zone never matters;
- merges are aliases (absorbed id -> canonical id, kept flat: an alias always points at a
  canonical id); reports resolve every sighting through them, nothing is rewritten;
- on PostgreSQL ``sightings`` is partitioned by UTC month (partitions made on demand), and
  PostgreSQL requires the partition key in every unique key, so the key is
  (tenant, face_image_id, ts); ``face_image_id`` is a hash of (tenant, image id, bbox) and
  a face's ``ts`` is its frame's, so it is still one row per face.

Append new versions; never edit an applied one. Tables of other concerns (tenancy) are
created here too, so every process using the database sees them.
"""

from __future__ import annotations

from revisit.store.dialect import Dialect
from revisit.store.report_sql import rollup_rows_from_sightings
from revisit.store.visit_spans import span_rows_from_sightings


def migrations(d: Dialect) -> list[tuple[int, list[str]]]:
    """(version, statements) in order, in the dialect ``d``."""
    vec = d.vector_type
    if d.partitioned:
        sightings_key, partition = "tenant, face_image_id, ts", " PARTITION BY RANGE (ts)"
    else:
        sightings_key, partition = "tenant, face_image_id", ""

    def index(name: str, table: str, cols: str, include: str = "") -> list[str]:
        if not d.indexes:
            return []
        inc = f" INCLUDE ({include})" if include else ""
        return [f"CREATE INDEX {name} ON {table} ({cols}){inc}"]

    return [
        (1, [
            """CREATE TABLE tenants (
                tenant VARCHAR PRIMARY KEY,
                max_visitor_number BIGINT NOT NULL DEFAULT 0,
                identity_version BIGINT NOT NULL DEFAULT 0,
                created_at TIMESTAMP NOT NULL)""",
            """CREATE TABLE frames (
                tenant VARCHAR NOT NULL, image_id VARCHAR NOT NULL,
                camera_id VARCHAR NOT NULL, location_id VARCHAR NOT NULL,
                ts TIMESTAMP NOT NULL, faces INTEGER NOT NULL DEFAULT 0,
                processed_at TIMESTAMP NOT NULL,
                PRIMARY KEY (tenant, image_id))""",
            f"""CREATE TABLE sightings (
                tenant VARCHAR NOT NULL, face_image_id VARCHAR NOT NULL,
                face_id VARCHAR NOT NULL, image_id VARCHAR NOT NULL,
                camera_id VARCHAR NOT NULL, location_id VARCHAR NOT NULL,
                ts TIMESTAMP NOT NULL,
                bbox_x INTEGER, bbox_y INTEGER, bbox_w INTEGER, bbox_h INTEGER,
                quality REAL, match_score REAL,
                PRIMARY KEY ({sightings_key})){partition}""",
            # the report's time-window scan (index-only, feeding the window function),
            # visitor detail / erasure, and redelivery checks by face
            *index("sightings_report", "sightings", "tenant, ts",
                   "location_id, camera_id, face_id"),
            *index("sightings_visitor", "sightings", "tenant, face_id"),
            *index("sightings_face", "sightings", "tenant, face_image_id"),
            f"""CREATE TABLE embeddings (
                tenant VARCHAR NOT NULL, face_image_id VARCHAR NOT NULL,
                embedding {vec} NOT NULL,
                PRIMARY KEY (tenant, face_image_id))""",
            """CREATE TABLE visitors (
                tenant VARCHAR NOT NULL, visitor_id VARCHAR NOT NULL,
                created_at TIMESTAMP NOT NULL, first_seen TIMESTAMP, last_seen TIMESTAMP,
                PRIMARY KEY (tenant, visitor_id))""",
            """CREATE TABLE cameras (
                tenant VARCHAR NOT NULL, camera_id VARCHAR NOT NULL,
                location_id VARCHAR NOT NULL, name VARCHAR, first_seen TIMESTAMP,
                PRIMARY KEY (tenant, camera_id))""",
            """CREATE TABLE locations (
                tenant VARCHAR NOT NULL, location_id VARCHAR NOT NULL, name VARCHAR,
                timezone VARCHAR NOT NULL DEFAULT 'UTC', first_seen TIMESTAMP,
                PRIMARY KEY (tenant, location_id))""",
            f"""CREATE TABLE exemplars (
                tenant VARCHAR NOT NULL, visitor_id VARCHAR NOT NULL,
                face_image_id VARCHAR NOT NULL, embedding {vec} NOT NULL,
                quality REAL, ts TIMESTAMP,
                PRIMARY KEY (tenant, face_image_id))""",
            *index("exemplars_visitor", "exemplars", "tenant, visitor_id"),
            """CREATE TABLE aliases (
                tenant VARCHAR NOT NULL, alias_id VARCHAR NOT NULL,
                visitor_id VARCHAR NOT NULL, merged_at TIMESTAMP NOT NULL, reason VARCHAR,
                PRIMARY KEY (tenant, alias_id))""",
            *index("aliases_visitor", "aliases", "tenant, visitor_id"),
            """CREATE TABLE merge_log (
                tenant VARCHAR NOT NULL, merge_id BIGINT NOT NULL,
                keep_id VARCHAR NOT NULL, absorb_id VARCHAR NOT NULL,
                merged_at TIMESTAMP NOT NULL, reason VARCHAR,
                repointed VARCHAR[] NOT NULL, split_at TIMESTAMP,
                PRIMARY KEY (tenant, merge_id))""",
            """CREATE TABLE erased (
                tenant VARCHAR NOT NULL, visitor_id VARCHAR NOT NULL,
                erased_at TIMESTAMP NOT NULL,
                PRIMARY KEY (tenant, visitor_id))""",
            # ordered resolution of a broker's ingest streams (distributed/resolve.py)
            """CREATE TABLE resolve_cursors (
                stream VARCHAR PRIMARY KEY, last_seq BIGINT NOT NULL,
                updated_at TIMESTAMP NOT NULL)""",
        ]),
        (2, [
            # resolve reorder buffer: batches of a stream that arrived before their
            # predecessor, kept as the queue's bytes
            f"""CREATE TABLE resolve_parked (
                stream VARCHAR NOT NULL, seq BIGINT NOT NULL, payload {d.blob_type} NOT NULL,
                parked_at TIMESTAMP NOT NULL, PRIMARY KEY (stream, seq))""",
        ]),
        # Report rollup: one row per visitor, location and UTC day (report_sql.rollup_cte),
        # kept by every write and delete, backfilled from existing sightings. Without
        # indexes (DuckDB) no key either: an ART index over ~10^7 rows costs more at load
        # than it saves in the per-batch delete + insert, which prunes by day through zone
        # maps. With them, the key serves that delete and the report's day-range scan.
        (3, [
            f"""CREATE TABLE visit_days (
                tenant VARCHAR NOT NULL, face_id VARCHAR NOT NULL,
                location_id VARCHAR NOT NULL, day DATE NOT NULL,
                first_ts TIMESTAMP NOT NULL, last_ts TIMESTAMP NOT NULL,
                n BIGINT NOT NULL, visits BIGINT NOT NULL, cont BOOLEAN NOT NULL
                {", PRIMARY KEY (tenant, day, location_id, face_id)" if d.indexes else ""})""",
            *index("visit_days_visitor", "visit_days", "tenant, face_id"),
            "INSERT INTO visit_days " + rollup_rows_from_sightings(d, "true")
            + " ORDER BY tenant, day, location_id",
        ]),
        # Tenancy (revisit.tenancy.db): tenants, API keys (SHA-256 of the secret only),
        # the camera registry, camera groups, the audit log, and secrets every replica
        # shares (the dashboard session key). IF NOT EXISTS: embedded stores made before
        # this version already hold these tables.
        (4, [
            """CREATE TABLE IF NOT EXISTS tenancy_tenants (
                tenant VARCHAR PRIMARY KEY, name VARCHAR NOT NULL,
                retention_days INTEGER NOT NULL, created_at TIMESTAMP NOT NULL)""",
            """CREATE TABLE IF NOT EXISTS tenancy_keys (
                key_hash VARCHAR PRIMARY KEY, key_id VARCHAR NOT NULL UNIQUE,
                tenant VARCHAR NOT NULL, role VARCHAR NOT NULL, cameras VARCHAR[] NOT NULL,
                name VARCHAR NOT NULL, created_at TIMESTAMP NOT NULL, revoked_at TIMESTAMP)""",
            """CREATE TABLE IF NOT EXISTS tenancy_locations (
                tenant VARCHAR NOT NULL, location_id VARCHAR NOT NULL, name VARCHAR NOT NULL,
                timezone VARCHAR NOT NULL, PRIMARY KEY (tenant, location_id))""",
            """CREATE TABLE IF NOT EXISTS tenancy_cameras (
                tenant VARCHAR NOT NULL, camera_id VARCHAR NOT NULL,
                location_id VARCHAR NOT NULL, name VARCHAR NOT NULL,
                timezone VARCHAR NOT NULL, PRIMARY KEY (tenant, camera_id))""",
            """CREATE TABLE IF NOT EXISTS tenancy_groups (
                tenant VARCHAR NOT NULL, name VARCHAR NOT NULL, camera_id VARCHAR NOT NULL,
                PRIMARY KEY (tenant, name, camera_id))""",
            "CREATE SEQUENCE IF NOT EXISTS tenancy_audit_seq",
            """CREATE TABLE IF NOT EXISTS tenancy_audit (
                id BIGINT PRIMARY KEY DEFAULT nextval('tenancy_audit_seq'),
                ts TIMESTAMP NOT NULL, tenant VARCHAR NOT NULL, actor VARCHAR NOT NULL,
                action VARCHAR NOT NULL, detail VARCHAR NOT NULL)""",
            """CREATE TABLE IF NOT EXISTS tenancy_secrets (
                name VARCHAR PRIMARY KEY, secret VARCHAR NOT NULL,
                created_at TIMESTAMP NOT NULL)""",
        ]),
        # Key rotation: the old key keeps working until expires_at (grace period).
        # Batch status, kept where every API replica and worker reads it: state, counts,
        # per-frame reasons (JSON), the key that posted it (a camera key reads only its
        # own batches).
        (5, [
            "ALTER TABLE tenancy_keys ADD COLUMN expires_at TIMESTAMP",
            """CREATE TABLE batch_status (
                tenant VARCHAR NOT NULL, batch_id VARCHAR NOT NULL, key_id VARCHAR,
                state VARCHAR NOT NULL, frames INTEGER NOT NULL,
                duplicates INTEGER NOT NULL DEFAULT 0, processed INTEGER NOT NULL DEFAULT 0,
                faces INTEGER NOT NULL DEFAULT 0, sightings INTEGER NOT NULL DEFAULT 0,
                new_visitors INTEGER NOT NULL DEFAULT 0, rejected VARCHAR NOT NULL,
                error VARCHAR, received_at TIMESTAMP NOT NULL, finished_at TIMESTAMP,
                PRIMARY KEY (tenant, batch_id))""",
        ]),
        # Stream gaps resolve stopped waiting for (a batch dead-lettered or lost upstream):
        # which, why, for which tenant(s) (those of the batch that waited), and when a
        # late copy was applied after all.
        (6, [
            """CREATE TABLE resolve_skipped (
                stream VARCHAR NOT NULL, seq BIGINT NOT NULL, tenants VARCHAR NOT NULL,
                reason VARCHAR NOT NULL, skipped_at TIMESTAMP NOT NULL,
                replayed_at TIMESTAMP, PRIMARY KEY (stream, seq))""",
        ]),
        # Each camera's empty-scene background (vision/scenes), the latest one: the
        # picture heatmaps are drawn on.
        (7, [
            f"""CREATE TABLE camera_scenes (
                tenant VARCHAR NOT NULL, camera_id VARCHAR NOT NULL, width INTEGER NOT NULL,
                height INTEGER NOT NULL, image {d.blob_type} NOT NULL,
                frames INTEGER NOT NULL, ts TIMESTAMP NOT NULL,
                PRIMARY KEY (tenant, camera_id))""",
        ]),
        # Visits rollup (store/visit_spans): one row per visit of a raw face id at a
        # location, kept by every write and delete like visit_days, backfilled here. The
        # analyses read it instead of sessionising a period's sightings per request.
        (8, [
            # the camera's named zone a sighting was in (occupancy zones): visit paths go
            # through zones (camera/zone)
            "ALTER TABLE sightings ADD COLUMN zone VARCHAR",
            f"""CREATE TABLE visit_spans (
                tenant VARCHAR NOT NULL, face_id VARCHAR NOT NULL,
                location_id VARCHAR NOT NULL, start_us BIGINT NOT NULL,
                end_us BIGINT NOT NULL, n BIGINT NOT NULL, path VARCHAR NOT NULL
                {", PRIMARY KEY (tenant, face_id, location_id, start_us)" if d.indexes else ""})""",
            *index("visit_spans_start", "visit_spans", "tenant, start_us"),
            "INSERT INTO visit_spans " + span_rows_from_sightings(d, "true")
            + " ORDER BY start_us",
        ]),
        # Occupancy (revisit.occupancy): cameras' zones and counting switch, locations'
        # capacity and levels (JSON documents validated by their pydantic models), people
        # per frame and zone, the door signs' read-only keys, alert rules, their state,
        # the alerts raised and every delivery attempt.
        (9, [
            """CREATE TABLE occupancy_cameras (
                tenant VARCHAR NOT NULL, camera_id VARCHAR NOT NULL, config VARCHAR NOT NULL,
                updated_at TIMESTAMP NOT NULL, PRIMARY KEY (tenant, camera_id))""",
            """CREATE TABLE occupancy_locations (
                tenant VARCHAR NOT NULL, location_id VARCHAR NOT NULL, config VARCHAR NOT NULL,
                updated_at TIMESTAMP NOT NULL, PRIMARY KEY (tenant, location_id))""",
            """CREATE TABLE people_counts (
                tenant VARCHAR NOT NULL, image_id VARCHAR NOT NULL, zone VARCHAR NOT NULL,
                camera_id VARCHAR NOT NULL, location_id VARCHAR NOT NULL,
                ts TIMESTAMP NOT NULL, count REAL NOT NULL, raw INTEGER NOT NULL,
                points VARCHAR, PRIMARY KEY (tenant, image_id, zone))""",
            *index("people_counts_time", "people_counts", "tenant, location_id, ts"),
            """CREATE TABLE display_keys (
                key_hash VARCHAR PRIMARY KEY, key_id VARCHAR NOT NULL, tenant VARCHAR NOT NULL,
                location_id VARCHAR NOT NULL, created_at TIMESTAMP NOT NULL,
                revoked_at TIMESTAMP)""",
            """CREATE TABLE alert_rules (
                tenant VARCHAR NOT NULL, rule_id VARCHAR NOT NULL, config VARCHAR NOT NULL,
                created_at TIMESTAMP NOT NULL, PRIMARY KEY (tenant, rule_id))""",
            """CREATE TABLE alert_state (
                tenant VARCHAR NOT NULL, rule_id VARCHAR NOT NULL, above_since TIMESTAMP,
                active_alert VARCHAR, last_fired TIMESTAMP, last_ts TIMESTAMP,
                PRIMARY KEY (tenant, rule_id))""",
            """CREATE TABLE alerts (
                tenant VARCHAR NOT NULL, alert_id VARCHAR NOT NULL, rule_id VARCHAR NOT NULL,
                location_id VARCHAR NOT NULL, zone VARCHAR NOT NULL, value REAL NOT NULL,
                message VARCHAR NOT NULL, started_at TIMESTAMP NOT NULL, ended_at TIMESTAMP,
                subject VARCHAR, PRIMARY KEY (tenant, alert_id))""",
            """CREATE TABLE alert_deliveries (
                tenant VARCHAR NOT NULL, alert_id VARCHAR NOT NULL, channel VARCHAR NOT NULL,
                target VARCHAR NOT NULL, attempt INTEGER NOT NULL, ts TIMESTAMP NOT NULL,
                ok BOOLEAN NOT NULL, detail VARCHAR NOT NULL,
                PRIMARY KEY (tenant, alert_id, channel, attempt))""",
        ]),
        # Known people (revisit.known): enrolments of a visitor id into a group (staff,
        # watchlist, custom) with who, when, why and until when; a tenant's watchlist
        # switch with its stated purpose. Enrolment photos' embeddings are exemplars of the
        # enrolled visitor (face_image_id 'enrol-<enrolment>-<n>').
        (10, [
            """CREATE TABLE enrolments (
                tenant VARCHAR NOT NULL, enrolment_id VARCHAR NOT NULL, grp VARCHAR NOT NULL,
                visitor_id VARCHAR NOT NULL, label VARCHAR NOT NULL, reason VARCHAR NOT NULL,
                source VARCHAR NOT NULL, enrolled_by VARCHAR NOT NULL,
                enrolled_at TIMESTAMP NOT NULL, expires_at TIMESTAMP,
                PRIMARY KEY (tenant, enrolment_id))""",
            """CREATE TABLE watchlist_settings (
                tenant VARCHAR PRIMARY KEY, enabled BOOLEAN NOT NULL, purpose VARCHAR NOT NULL,
                webhook_url VARCHAR, emails VARCHAR NOT NULL, keep_frames BOOLEAN NOT NULL,
                changed_by VARCHAR NOT NULL, changed_at TIMESTAMP NOT NULL)""",
        ]),
        # Dashboard sessions of a key signed in before this time are void: signing out
        # ends the session on every replica, not only in the browser that signed out.
        (11, ["ALTER TABLE tenancy_keys ADD COLUMN sessions_after TIMESTAMP"]),
        # Faces the resolver holds (a camera track not decided yet), written with the batch
        # that brought them and deleted with the one that decides them: a process killed
        # in between finds them here (identity/resolver.py). The face as the queue codec
        # encodes it (embedding, landmarks, quality), without its crop.
        (12, [
            f"""CREATE TABLE held_faces (
                tenant VARCHAR NOT NULL, face_image_id VARCHAR NOT NULL,
                camera_id VARCHAR NOT NULL, ts TIMESTAMP NOT NULL,
                held_at TIMESTAMP NOT NULL, face {d.blob_type} NOT NULL,
                PRIMARY KEY (tenant, face_image_id))""",
        ]),
        # Aligned face crops (JPEG), only with privacy.keep_crops: written in the batch's
        # transaction, so erasure and retention reach them like every other row, in every
        # process (files in one machine's data directory did not).
        (13, [
            f"""CREATE TABLE face_crops (
                tenant VARCHAR NOT NULL, face_image_id VARCHAR NOT NULL,
                ts TIMESTAMP NOT NULL, jpeg {d.blob_type} NOT NULL,
                PRIMARY KEY (tenant, face_image_id))""",
        ]),
        # Columns that were once added to migrations 8 and 9 after those had shipped: a
        # store already past them never got them (the rule above was broken). Added here
        # for such stores; a no-op where they exist.
        (14, [
            "ALTER TABLE sightings ADD COLUMN IF NOT EXISTS zone VARCHAR",
            "ALTER TABLE people_counts ADD COLUMN IF NOT EXISTS points VARCHAR",
            "ALTER TABLE alerts ADD COLUMN IF NOT EXISTS subject VARCHAR",
            "ALTER TABLE alert_state ADD COLUMN IF NOT EXISTS last_ts TIMESTAMP",
        ]),
        # a parked batch applied stays until the store stage has it (its alerts): set
        # when applied, the row deleted once forwarded (distributed/resolve.py)
        (15, [
            "ALTER TABLE resolve_parked ADD COLUMN IF NOT EXISTS applied_at TIMESTAMP",
        ]),
        # Camera tracks still open when a run ended or a server stopped (their motion,
        # pooled embedding and counters; no image), read back and deleted by the next start
        # of the same data, so a person seen across the stop stays one track
        # (identity/resolver.py). Erasure takes a visitor's; retention those begun before
        # the cutoff.
        (16, [
            f"""CREATE TABLE IF NOT EXISTS open_tracks (
                tenant VARCHAR NOT NULL, camera_id VARCHAR NOT NULL, track_key BIGINT NOT NULL,
                visitor_id VARCHAR, twin_of VARCHAR, first_ts TIMESTAMP NOT NULL,
                last_ts TIMESTAMP NOT NULL, saved_at TIMESTAMP NOT NULL,
                state {d.blob_type} NOT NULL,
                PRIMARY KEY (tenant, camera_id, track_key))""",
        ]),
    ]


# DuckDB stores made before the one migration list recorded versions 1 (the tables without
# identity_version and resolve_cursors) and 2 (visit_days). These statements bring such a
# file's version-1 tables to version 1 of the list above (see DuckDBStore).
DUCKDB_LEGACY_V1 = [
    "ALTER TABLE tenants ADD COLUMN identity_version BIGINT DEFAULT 0",
    """CREATE TABLE resolve_cursors (
        stream VARCHAR PRIMARY KEY, last_seq BIGINT NOT NULL,
        updated_at TIMESTAMP NOT NULL)""",
]
