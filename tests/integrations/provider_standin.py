"""Stand-ins of the Anthropic Messages API and the Gemini API on loopback, for tests.

Standard library only (``http.server`` in a thread); one server answers both:

- ``POST /v1/messages`` (Anthropic): JSON, or server-sent events when ``stream`` is true
  (``message_start``, ``content_block_start``, one ``content_block_delta`` per word,
  ``content_block_stop``, ``message_delta`` with the stop reason and output tokens,
  ``message_stop``).
- ``POST /v1beta/models/{model}:generateContent`` (Gemini; ``/v1/`` too, which newer
  google-genai versions call): JSON;
  ``:streamGenerateContent?alt=sse``: one chunk per word, the last with ``finishReason`` and
  the full usage.

The reply is ``"echo: " + <last user text>`` (`openai_standin.reply_for`). Token counts are
word counts: input = the words of every message and of the system prompt, output = the
words of the reply. A model name chooses failures: ``error-400`` answers 400 and
``midstream-error`` streams one word, then an error event.
"""

from __future__ import annotations

import json
import re
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from openai_standin import reply_for, words

__all__ = ["ProviderStandIn"]

_GEMINI = re.compile(r"^/(?:v1beta|v1)/models/(?P<model>[^:/]+):(?P<method>\w+)")


def _text(content: Any) -> str:
    """Text of an Anthropic content (a string or blocks) or a Gemini content (parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        return _text(content.get("parts"))
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class ProviderStandIn:
    """``with ProviderStandIn() as s``: ``s.anthropic_url`` and ``s.gemini_url`` for the clients.

    ``requests`` lists ``(path, body)`` of every request received, in order.
    """

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) if length else b"{}")
                with standin._lock:
                    standin.requests.append((self.path, body))
                gemini = _GEMINI.match(self.path)
                if self.path.split("?")[0].rstrip("/") == "/v1/messages":
                    self._anthropic(body)
                elif gemini is not None:
                    self._gemini(gemini["model"], gemini["method"], body)
                else:
                    self._json(404, {"error": {"message": "not found"}})

            # -- anthropic --------------------------------------------------------------
            def _anthropic(self, body: dict[str, Any]) -> None:
                model = str(body.get("model", ""))
                if model == "error-400":
                    self._json(400, {"type": "error", "error": {
                        "type": "invalid_request_error", "message": "stand-in bad request"}})
                    return
                messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
                last = next((_text(m.get("content")) for m in reversed(messages)
                             if m.get("role") == "user"), "")
                reply = reply_for(last)
                input_tokens = words(_text(body.get("system"))) + sum(
                    words(_text(m.get("content"))) for m in messages)
                message: dict[str, Any] = {
                    "id": "msg_standin", "type": "message", "role": "assistant",
                    "model": model + "-resp", "content": [{"type": "text", "text": reply}],
                    "stop_reason": "end_turn", "stop_sequence": None,
                    "usage": {"input_tokens": input_tokens, "output_tokens": words(reply)},
                }
                if not body.get("stream"):
                    self._json(200, message)
                    return

                def events() -> Iterator[tuple[str | None, dict[str, Any]]]:
                    start = {**message, "content": [], "stop_reason": None,
                             "usage": {"input_tokens": input_tokens, "output_tokens": 1}}
                    yield "message_start", {"type": "message_start", "message": start}
                    yield "content_block_start", {"type": "content_block_start", "index": 0,
                                                  "content_block": {"type": "text", "text": ""}}
                    for i, part in enumerate(reply.split(" ")):
                        yield "content_block_delta", {
                            "type": "content_block_delta", "index": 0,
                            "delta": {"type": "text_delta", "text": part if i == 0 else " " + part},
                        }
                        if model == "midstream-error":
                            yield "error", {"type": "error", "error": {
                                "type": "overloaded_error", "message": "stand-in broke mid-stream"}}
                            return
                    yield "content_block_stop", {"type": "content_block_stop", "index": 0}
                    yield "message_delta", {
                        "type": "message_delta",
                        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                        "usage": {"output_tokens": words(reply)},
                    }
                    yield "message_stop", {"type": "message_stop"}

                self._sse(events())

            # -- gemini -----------------------------------------------------------------
            def _gemini(self, model: str, method: str, body: dict[str, Any]) -> None:
                if model == "error-400":
                    self._json(400, {"error": {"code": 400, "message": "stand-in bad request",
                                               "status": "INVALID_ARGUMENT"}})
                    return
                contents = [c for c in body.get("contents") or [] if isinstance(c, dict)]
                last = next((_text(c) for c in reversed(contents)
                             if c.get("role", "user") == "user"), "")
                reply = reply_for(last)
                prompt = words(_text(body.get("systemInstruction"))) + sum(
                    words(_text(c)) for c in contents)
                usage = {"promptTokenCount": prompt, "candidatesTokenCount": words(reply),
                         "totalTokenCount": prompt + words(reply)}

                def answer(text: str, finish: bool, counts: dict[str, int]) -> dict[str, Any]:
                    candidate: dict[str, Any] = {
                        "content": {"role": "model", "parts": [{"text": text}]}, "index": 0}
                    if finish:
                        candidate["finishReason"] = "STOP"
                    return {"candidates": [candidate], "usageMetadata": counts,
                            "modelVersion": model + "-resp", "responseId": "gemini-standin"}

                if method == "generateContent":
                    self._json(200, answer(reply, True, usage))
                    return

                def events() -> Iterator[tuple[str | None, dict[str, Any]]]:
                    parts = reply.split(" ")
                    for i, part in enumerate(parts):
                        last_part = i == len(parts) - 1
                        text = part if i == 0 else " " + part
                        yield None, answer(text, last_part, usage if last_part else {
                            "promptTokenCount": prompt, "totalTokenCount": prompt})
                        if model == "midstream-error":
                            yield None, {"error": {"code": 500, "status": "INTERNAL",
                                                   "message": "stand-in broke mid-stream"}}
                            return

                self._sse(events(), done=False)

            # -- transport --------------------------------------------------------------
            def _json(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _sse(self, events: Iterator[tuple[str | None, dict[str, Any]]],
                     done: bool = False) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                try:
                    for event, payload in events:
                        head = f"event: {event}\n" if event else ""
                        self._chunk(f"{head}data: {json.dumps(payload)}\n\n".encode())
                    self.wfile.write(b"0\r\n\r\n")
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True

            def _chunk(self, data: bytes) -> None:
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")

        self._server = _Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="provider-standin", daemon=True
        )

    @property
    def port(self) -> int:
        """The TCP port the server listens on."""
        return int(self._server.server_address[1])

    @property
    def anthropic_url(self) -> str:
        """The base URL to give ``anthropic.Anthropic(base_url=...)``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def gemini_url(self) -> str:
        """The base URL to give google-genai's ``HttpOptions(base_url=...)``."""
        return f"http://127.0.0.1:{self.port}/"

    def __enter__(self) -> ProviderStandIn:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
