"""`gearshift sources ingest/list/delete` against a real retriever."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

from tests.retriever.helpers import CACHE_DOC


def _gearshift(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gearshift.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "GEARSHIFT_API_KEY": ""},
    )


def test_an_undecodable_file_is_reported_while_the_rest_ingest(
    retriever_endpoint: str, tmp_path: Path
) -> None:
    folder = tmp_path / "notes"
    (folder / "sub").mkdir(parents=True)
    (folder / "cache.md").write_text(CACHE_DOC)
    (folder / "sub" / "plain.txt").write_text("Plain notes about the on-call rota.\n")
    (folder / "latin1.md").write_bytes("# Caf\xe9\n\nna\xefve text".encode("latin-1"))
    (folder / "picture.png").write_bytes(b"\x89PNG\r\n")
    tenant = "cli-" + uuid.uuid4().hex[:8]
    common = ["--retriever", retriever_endpoint, "--tenant", tenant]

    done = _gearshift("sources", "ingest", *common, "--source", "notes", str(folder))
    assert done.returncode == 1, done.stderr
    lines = done.stdout.splitlines()
    assert any(
        line.startswith("failed") and "notes/latin1.md" in line and "not UTF-8" in line
        for line in lines
    ), done.stdout
    assert any(line.startswith("created   notes/cache.md") for line in lines), done.stdout
    assert any(line.startswith("created   notes/sub/plain.txt") for line in lines), done.stdout
    assert "picture.png" not in done.stdout
    assert "2 ingested, 1 failed" in lines[-1]

    listed = _gearshift("sources", "list", *common)
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if line.startswith("notes "))
    assert row.split()[1] == "2"

    deleted = _gearshift("sources", "delete", *common, "--source", "notes")
    assert deleted.returncode == 0, deleted.stderr
    assert "deleted 2 documents" in deleted.stdout
    missing = _gearshift("sources", "list", *common, "--source", "notes")
    assert missing.returncode == 1
    assert "NOT_FOUND" in missing.stderr
