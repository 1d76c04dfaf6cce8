"""A schemathesis run over the service's OpenAPI schema, against a real ``revisit serve``
that this test starts (embedded store, no models loaded for the fuzzed requests to matter):
every operation, uploads included, with positive and negative data. It must find no 5xx
and no answer that breaks the schema (status, content type, headers, body), and negative
data must be refused. One check is left out: "schema-valid data is accepted" cannot hold for
rules a schema cannot state (a camera must be registered, each metadata entry must name an
uploaded part), which answer 422 with a reason.

Bounded: a fixed number of examples per operation (``FUZZ_EXAMPLES``, default 10;
``benchmarks/hostile.py`` runs more).
The admin key used is the tenant's only admin key, which the API refuses to revoke.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

schemathesis = pytest.importorskip("schemathesis")
httpx = pytest.importorskip("httpx")
from benchmarks.distributed_harness import free_port, start_server  # noqa: E402
from benchmarks.hostile import fuzz, setup  # noqa: E402

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "10"))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    env, keys = setup(tmp_path_factory.mktemp("fuzz"))
    port = free_port()
    proc = start_server(env, port)
    try:
        yield f"http://127.0.0.1:{port}", keys
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_api_conforms_to_its_schema(server: tuple[str, dict[str, str]], mode: str) -> None:
    """Every operation, ``EXAMPLES`` cases each: no 5xx, no schema violation."""
    url, keys = server
    res = fuzz(url, keys, mode, EXAMPLES)
    assert not res.failures, "\n\n".join(res.failures[:10])
    if mode == "positive":
        assert res.operations <= set(res.answered), \
            f"never answered: {sorted(res.operations - set(res.answered))}"
    print(f"{mode}: " + "; ".join(f"{k} {sorted(v)}" for k, v in sorted(res.answered.items())))
