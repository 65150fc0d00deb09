"""The API-key table both router doors (and the retriever) authenticate with."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from gearshift.runtime.api_keys import KeyTable
from gearshift.runtime.errors import Unauthenticated


def test_keys_file_reloads_and_refuses_unknown(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    path.write_text(yaml.safe_dump({"k1": "t1"}))
    keys = KeyTable(str(path), check_interval_s=0.0)
    assert keys.authenticate("Bearer k1") == "t1"
    for bad in (None, "", "Bearer ", "Bearer nope", "Basic k1"):
        with pytest.raises(Unauthenticated):
            keys.authenticate(bad)
    tmp = tmp_path / "keys.tmp"
    tmp.write_text(yaml.safe_dump({"k2": "t2"}))
    tmp.replace(path)  # a Secret volume swaps the file atomically
    assert keys.authenticate("Bearer k2") == "t2"
    with pytest.raises(Unauthenticated):
        keys.authenticate("Bearer k1")
    path.write_text("{not yaml")  # a broken file keeps the last good table
    time.sleep(0.01)
    assert keys.authenticate("Bearer k2") == "t2"
