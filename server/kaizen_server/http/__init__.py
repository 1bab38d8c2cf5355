"""The HTTP layer: the ASGI app on uvicorn, hardening, and `LocalServer` (`server`);
the loopback check of a bind address (`addresses`).
"""

__all__: list[str] = []
