"""The run-time scorer tests use the training tests' embedder fixture (tests/learn/)."""

from __future__ import annotations

from tests.learn.conftest import embed

__all__ = ["embed"]
