"""The response the application receives: the library's own, plus ``ct_trace_id`` and
``ct_score``, without changing what it serializes to, compares equal to, or pickles as.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import wrapt

from kaizen_sdk.integrations._call import TracedCall

__all__ = [
    "TracedResponse",
    "wrap_response",
]

logger = logging.getLogger("kaizen_sdk.instrument")

class TracedResponse(wrapt.ObjectProxy):  # type: ignore[type-arg]
    """The library's response, plus ``ct_trace_id`` and ``ct_score``.

    Everything else goes to the response itself: attributes, methods (``model_dump()``,
    ``model_dump_json()``, ``json()``), ``isinstance``, ``str``/``repr``, equality and
    hashing. Pickling and copying produce the plain response.
    """

    def __init__(self, wrapped: Any, call: TracedCall) -> None:
        super().__init__(wrapped)
        self._self_call = call

    @property
    def ct_trace_id(self) -> str:
        """The CT trace id of this call (a UUID string), for scoring later."""
        return self._self_call.trace_id

    def ct_score(self, score: float, scored_by: str = "sdk") -> Any:
        """Score this call in [0, 1]: queued after its trace, delivered in the background.

        Return the score's id, or ``None`` when tracing is off or the score cannot be sent
        (logged). Never raises, never blocks; ``CTClient.score`` is the synchronous call.
        """
        return self._self_call.score(score, scored_by)

    def __repr__(self) -> str:
        return repr(self.__wrapped__)

    def __reduce_ex__(self, protocol: Any) -> Any:
        return self.__wrapped__.__reduce_ex__(protocol)

    def __reduce__(self) -> Any:
        return self.__wrapped__.__reduce__()

    def __copy__(self) -> Any:
        return copy.copy(self.__wrapped__)

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        return copy.deepcopy(self.__wrapped__, memo)


def wrap_response(response: Any, call: TracedCall) -> Any:
    """Return *response* wrapped in `TracedResponse`, or unchanged if it cannot be proxied."""
    if response is None or isinstance(response, (str, bytes, int, float, bool)):
        return response
    try:
        return TracedResponse(response, call)
    except Exception:
        logger.debug("Could not wrap the LLM response.", exc_info=True)
        return response
