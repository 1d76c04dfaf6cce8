"""docs/deploy.md's walk-through, executed as written (its ``walkthrough`` block), on Redis
+ PostgreSQL and on Kafka + PostgreSQL: admin CLI, workers from the Procfile under honcho,
two API replicas on one store, ``revisit ingest`` following its frames to the store,
``revisit status``, the report on the CLI and over HTTP. Only addresses are swapped for
the test's own (ports, schema); a docs change that breaks a command breaks this test."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from benchmarks import distributed_harness as H

REPO = Path(__file__).resolve().parents[2]


def _block() -> str:
    text = (REPO / "docs" / "deploy.md").read_text()
    m = re.search(r"<!-- walkthrough -->\n```bash\n(.*?)```\n<!-- /walkthrough -->", text, re.S)
    assert m, "docs/deploy.md lost its walkthrough block"
    return m.group(1)


@pytest.mark.parametrize("broker", ["redis", "kafka"])
def test_the_deploy_walkthrough_runs_as_written(
    broker: str, tmp_path: Path, pg_url: str, request: pytest.FixtureRequest
) -> None:
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    if not (REPO / ".venv" / "bin" / "honcho").exists():
        pytest.skip("honcho is not installed: pip install -e '.[distributed]'")
    if broker == "redis":
        queue_url = request.getfixturevalue("redis_url").split("?")[0]
    else:  # a broker of its own, from scripts/kafka.sh: topics no other test has used
        request.getfixturevalue("kafka_bootstrap")  # skips where Tansu is missing
        port = H.free_port()
        kafka = subprocess.Popen(["bash", str(REPO / "scripts" / "kafka.sh"), str(port)],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        request.addfinalizer(kafka.kill)
        H.wait_port(port, "tansu")
        queue_url = f"kafka://127.0.0.1:{port}"
    work = tmp_path / "walk"
    work.mkdir()
    (work / ".venv").symlink_to(REPO / ".venv")
    shutil.copy(REPO / "Procfile", work / "Procfile")
    lines = []
    for i, f in enumerate(H.scenario(48, people=8, face_ratio=0.9, tenants=("acme",))):
        (work / f"{i:03d}.jpg").write_bytes(f.data)
        lines.append(json.dumps({"image": f"{i:03d}.jpg", "camera_id": f.camera_id,
                                 "location_id": f.location_id, "ts": f.ts.isoformat(),
                                 "tenant": "acme", "image_id": f"walk-{i}"}))
    (work / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    p1, p2 = H.free_port(), H.free_port()
    script = (_block()
              .replace("redis://127.0.0.1:6379/0", queue_url)
              .replace("postgresql://postgres@127.0.0.1:5432/revisit", pg_url)
              .replace("8001", str(p1)).replace("8002", str(p2)))
    runner = ("set -euo pipefail\n"
              "trap 'kill $(jobs -p) 2>/dev/null; wait' EXIT\n" + script)
    env = {k: v for k, v in os.environ.items() if not k.startswith("REVISIT_")}
    # the scene is dated March 2024 as the walkthrough's report is: past the default
    # retention by now, so let it through as tests/conftest.py does for every test
    env["REVISIT_PRIVACY__RETENTION_AT_DOOR"] = "false"
    out = subprocess.run(["bash", "-c", runner], cwd=work, env=env, text=True,
                         capture_output=True, timeout=600)
    logs = "".join(f"\n--- {p.name}\n{p.read_text()[-1500:]}" for p in work.glob("*.log"))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:] + logs
    assert "frames stored: acme 48" in out.stdout, out.stdout
    assert re.search(r"48 frames, \d+ faces, [1-9]\d* sightings", out.stdout), out.stdout
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["totals"]["unique_visitors"] > 0
    print(out.stdout)
