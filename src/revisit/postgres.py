"""PostgreSQL connection URLs and first-use setup, shared by the sighting store and the
pgvector face index (neither reaches into the other)."""

from __future__ import annotations

import contextlib
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import sql as psql


def parse_url(url: str) -> tuple[str, str]:
    """``postgresql://...?schema=NAME`` -> (libpq conninfo URL, schema). ``schema`` lets
    tests and several deployments share one database."""
    parts = urlsplit(url)
    params = parse_qsl(parts.query, keep_blank_values=True)
    schema = next((v for k, v in params if k == "schema"), "public")
    rest = urlencode([(k, v) for k, v in params if k != "schema"])
    scheme = "postgresql" if parts.scheme in ("postgres", "postgresql") else parts.scheme
    return urlunsplit((scheme, parts.netloc, parts.path, rest, "")), schema


def ensure_database(conninfo: str, schema: str, connect_timeout: int = 10) -> None:
    """Create the database and the schema on first use, so a URL is all a deployment
    needs."""
    try:
        conn = psycopg.connect(conninfo, connect_timeout=connect_timeout)
    except psycopg.OperationalError as exc:
        if "does not exist" not in str(exc):
            raise
        parts = urlsplit(conninfo)
        admin = urlunsplit(parts._replace(path="/postgres"))
        with psycopg.connect(admin, autocommit=True, connect_timeout=connect_timeout) as c, \
                contextlib.suppress(psycopg.errors.DuplicateDatabase):
            c.execute(psql.SQL("CREATE DATABASE {}").format(
                psql.Identifier(parts.path.lstrip("/"))))
        conn = psycopg.connect(conninfo, connect_timeout=connect_timeout)
    with conn:
        conn.autocommit = True
        with contextlib.suppress(psycopg.errors.UniqueViolation):
            conn.execute(psql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(
                psql.Identifier(schema)))
