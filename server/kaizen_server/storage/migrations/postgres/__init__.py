"""The PostgreSQL schema steps (package data: ``NNNN_name.sql`` and ``NNNN_name.py`` files).

See `kaizen_server.storage.migrations` for the rules; `kaizen_server.storage.postgres_schema`
applies them.
"""

__all__: list[str] = []
