"""Fixtures of the storage contract suite: `backend` and `store`, one per storage backend."""

from __future__ import annotations

from storage_backends import backend, store

__all__ = ["backend", "store"]
