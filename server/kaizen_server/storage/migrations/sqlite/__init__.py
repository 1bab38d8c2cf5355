"""The SQLite schema steps (package data: ``NNNN_name.sql`` and ``NNNN_name.py`` files).

See `kaizen_server.storage.migrations` for the rules; `kaizen_server.storage.sqlite_schema`
applies them.
"""

__all__: list[str] = []
