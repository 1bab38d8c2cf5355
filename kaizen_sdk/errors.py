"""Every exception the SDK raises, and how HTTP statuses map onto them.

```text
CTError                       .status_code .detail (None for local errors)
├── CTAuthError               401/403
├── CTNotFoundError           404
├── CTValidationError         400/422, and local argument checks (score outside [0, 1])
├── CTRateLimitError          429, .retry_after
├── CTServerError             5xx
├── CTConnectionError         wraps httpx transport errors
└── CTTimeoutError            wraps httpx timeouts; also wait_for_job running out
```

Misuse of the Python API itself (calling a closed client, decorating a non-callable) raises
plain ``RuntimeError``/``TypeError`` instead.
"""

from __future__ import annotations

__all__ = [
    "CTAuthError",
    "CTConnectionError",
    "CTError",
    "CTNotFoundError",
    "CTRateLimitError",
    "CTServerError",
    "CTTimeoutError",
    "CTValidationError",
    "error_for_status",
]


class CTError(Exception):
    """Base of every error raised by the SDK.

    ``status_code`` is the HTTP status when the server answered, else ``None``;
    ``detail`` is the server's explanation when it gave one.
    """

    def __init__(
        self, message: str, *, status_code: int | None = None, detail: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.detail = detail

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, status_code={self.status_code!r})"


class CTAuthError(CTError):
    """The API key was missing, wrong, or not allowed to do this (401/403)."""


class CTNotFoundError(CTError):
    """The task, prompt version, job or trace does not exist (404)."""


class CTValidationError(CTError):
    """The request was rejected as invalid (400/422), or failed a local argument check."""


class CTRateLimitError(CTError):
    """The server asked us to slow down (429). ``retry_after`` is in seconds when given."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = 429,
        detail: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, status_code=status_code, detail=detail)
        self.retry_after = retry_after


class CTServerError(CTError):
    """The server failed (5xx)."""


class CTConnectionError(CTError):
    """The server could not be reached (refused, reset, DNS, TLS)."""


class CTTimeoutError(CTError):
    """A request, or a wait such as ``wait_for_job``, ran out of time."""


def error_for_status(status_code: int) -> type[CTError]:
    """Return the error class for an HTTP error status."""
    if status_code in (401, 403):
        return CTAuthError
    if status_code == 404:
        return CTNotFoundError
    if status_code in (400, 409, 413, 422):
        return CTValidationError
    if status_code == 429:
        return CTRateLimitError
    if status_code >= 500:
        return CTServerError
    return CTError
