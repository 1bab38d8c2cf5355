"""An OpenAI-compatible stand-in server on loopback, for tests and benchmarks.

Standard library only (``http.server`` in a thread). It answers:

- ``POST /v1/chat/completions``: JSON, or server-sent events when ``stream`` is true (one chunk
  per word, then a finish chunk, then a usage chunk when ``stream_options.include_usage``).
- ``POST /v1/responses``: JSON, or server-sent events (``response.created``, one
  ``response.output_text.delta`` per word, ``response.completed`` with usage).

The reply is ``"echo: " + <last user text>``. Token counts are word counts, so tests can
state them exactly: ``prompt_tokens`` counts the words of every message (or of the Responses
``instructions`` and ``input``), ``completion_tokens`` the words of the reply.

A request that names a ``service_tier`` gets it back with ``system_fingerprint: "fp_standin"``
(chat completions, JSON and every stream chunk).

A Responses request with ``metadata={"response_id": ID}`` is answered as response *ID*
(else ``resp_standin``): instrumentations that keep state per response id need distinct ones.

A model name chooses failures: ``error-400`` answers 400, ``error-500`` answers 500, and
``midstream-error`` streams one chunk and then an error event.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["CREATED", "StandIn", "reply_for", "words"]

CREATED = 1_700_000_000
"""The fixed creation time of every response, so two answers to one request are equal."""


def words(text: str) -> int:
    """Count whitespace-separated words, the stand-in's token measure."""
    return len(text.split())


def reply_for(last_user_text: str) -> str:
    """Return the text the stand-in answers to *last_user_text*."""
    return f"echo: {last_user_text}"


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            str(part.get("text", "")) for part in content if isinstance(part, dict)
        )
    return ""


def _last_user(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            return _text_of(message.get("content"))
    return ""


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that stops reading a stream early closes its connection: not an error.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class StandIn:
    """The stand-in server: ``with StandIn() as s: s.base_url`` (``http://127.0.0.1:<port>/v1``).

    *port* 0 (the default) takes a free port. Run the file to serve until Ctrl-C.

    ``requests`` lists ``(path, body)`` of every request received, in order.
    """

    def __init__(self, port: int = 0) -> None:
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms stall

            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b"{}"
                try:
                    body = json.loads(raw)
                except ValueError:
                    self._json(400, {"error": {"message": "bad json", "type": "invalid"}})
                    return
                with standin._lock:
                    standin.requests.append((self.path, body))
                model = str(body.get("model", ""))
                if model == "error-400":
                    self._json(
                        400,
                        {"error": {"message": "stand-in bad request",
                                   "type": "invalid_request_error", "code": "bad"}},
                    )
                    return
                if model == "error-500":
                    self._json(500, {"error": {"message": "stand-in failure", "type": "server"}})
                    return
                if self.path.rstrip("/").endswith("/chat/completions"):
                    self._chat(body)
                elif self.path.rstrip("/").endswith("/responses"):
                    self._responses(body)
                else:
                    self._json(404, {"error": {"message": "not found", "type": "not_found"}})

            # -- chat completions -------------------------------------------------------
            def _chat(self, body: dict[str, Any]) -> None:
                messages = list(body.get("messages") or [])
                model = str(body.get("model", ""))
                reply = reply_for(_last_user(messages))
                prompt_tokens = sum(words(_text_of(m.get("content"))) for m in messages)
                usage = {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": words(reply),
                    "total_tokens": prompt_tokens + words(reply),
                }
                created = CREATED
                tier = body.get("service_tier")
                extra = {"service_tier": tier, "system_fingerprint": "fp_standin"} if tier else {}
                if not body.get("stream"):
                    self._json(200, {
                        "id": "chatcmpl-standin",
                        "object": "chat.completion",
                        "created": created,
                        "model": model + "-resp",
                        "choices": [{
                            "index": 0,
                            "finish_reason": "stop",
                            "message": {"role": "assistant", "content": reply},
                        }],
                        "usage": usage,
                        **extra,
                    })
                    return
                include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

                def chunk(delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
                    return {
                        "id": "chatcmpl-standin",
                        "object": "chat.completion.chunk",
                        "created": created,
                        "model": model + "-resp",
                        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                        **extra,
                    }

                def events() -> Iterator[tuple[str | None, dict[str, Any]]]:
                    yield None, chunk({"role": "assistant", "content": ""}, None)
                    parts = reply.split(" ")
                    for i, part in enumerate(parts):
                        text = part if i == 0 else " " + part
                        yield None, chunk({"content": text}, None)
                        if model == "midstream-error":
                            yield None, {"error": {"message": "stand-in broke mid-stream",
                                                   "type": "server"}}
                            return
                    yield None, chunk({}, "stop")
                    if include_usage:
                        last = chunk({}, None)
                        last["choices"] = []
                        last["usage"] = usage
                        yield None, last

                self._sse(events())

            # -- responses --------------------------------------------------------------
            def _responses(self, body: dict[str, Any]) -> None:
                model = str(body.get("model", ""))
                given = body.get("input")
                if isinstance(given, str):
                    last_user, input_words = given, words(given)
                else:
                    items = [i for i in (given or []) if isinstance(i, dict)]
                    last_user = _last_user(items)
                    input_words = sum(words(_text_of(i.get("content"))) for i in items)
                input_words += words(str(body.get("instructions") or ""))
                reply = reply_for(last_user)
                metadata = body.get("metadata")
                response_id = (metadata.get("response_id") if isinstance(metadata, dict)
                               else None) or "resp_standin"
                usage = {
                    "input_tokens": input_words,
                    "output_tokens": words(reply),
                    "total_tokens": input_words + words(reply),
                    "input_tokens_details": {"cached_tokens": 0},
                    "output_tokens_details": {"reasoning_tokens": 0},
                }

                def response(status: str, text: str | None) -> dict[str, Any]:
                    out: dict[str, Any] = {
                        "id": response_id,
                        "object": "response",
                        "created_at": CREATED,
                        "model": model + "-resp",
                        "status": status,
                        "output": [],
                        "parallel_tool_calls": True,
                        "tool_choice": "auto",
                        "tools": [],
                    }
                    if text is not None:
                        out["output"] = [{
                            "type": "message",
                            "id": "msg_standin",
                            "status": "completed",
                            "role": "assistant",
                            "content": [{"type": "output_text", "text": text,
                                         "annotations": []}],
                        }]
                        out["usage"] = usage
                    return out

                if not body.get("stream"):
                    self._json(200, response("completed", reply))
                    return

                def events() -> Iterator[tuple[str | None, dict[str, Any]]]:
                    seq = 0
                    yield "response.created", {"type": "response.created", "sequence_number": seq,
                                                "response": response("in_progress", None)}
                    item = {"type": "message", "id": "msg_standin", "status": "in_progress",
                            "role": "assistant", "content": []}
                    seq += 1
                    yield "response.output_item.added", {
                        "type": "response.output_item.added", "sequence_number": seq,
                        "output_index": 0, "item": item,
                    }
                    seq += 1
                    yield "response.content_part.added", {
                        "type": "response.content_part.added", "sequence_number": seq,
                        "item_id": "msg_standin", "output_index": 0, "content_index": 0,
                        "part": {"type": "output_text", "text": "", "annotations": []},
                    }
                    for i, part in enumerate(reply.split(" ")):
                        seq += 1
                        yield "response.output_text.delta", {
                            "type": "response.output_text.delta",
                            "sequence_number": seq,
                            "item_id": "msg_standin",
                            "output_index": 0,
                            "content_index": 0,
                            "delta": part if i == 0 else " " + part,
                            "logprobs": [],
                        }
                    seq += 1
                    yield "response.completed", {"type": "response.completed",
                                                  "sequence_number": seq,
                                                  "response": response("completed", reply)}

                self._sse(events())

            # -- transport --------------------------------------------------------------
            def _json(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _sse(self, events: Iterator[tuple[str | None, dict[str, Any]]]) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                try:
                    for event, payload in events:
                        head = f"event: {event}\n" if event else ""
                        self._chunk(f"{head}data: {json.dumps(payload)}\n\n".encode())
                    self._chunk(b"data: [DONE]\n\n")
                    self.wfile.write(b"0\r\n\r\n")
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True

            def _chunk(self, data: bytes) -> None:
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")

        self._server = _Server(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="openai-standin", daemon=True
        )

    @property
    def base_url(self) -> str:
        """The ``/v1`` base URL to give an OpenAI client."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    @property
    def port(self) -> int:
        """The TCP port the server listens on."""
        return int(self._server.server_address[1])

    def start(self) -> StandIn:
        """Start serving in a daemon thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> StandIn:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


if __name__ == "__main__":  # python tests/integrations/openai_standin.py [port]
    import contextlib
    import signal

    port_arg = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    standin = StandIn(port=port_arg).start()
    print(f"OpenAI stand-in at {standin.base_url} (Ctrl-C stops it)", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        signal.pause()
    standin.stop()
