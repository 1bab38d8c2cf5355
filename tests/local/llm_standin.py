"""Deterministic stand-ins on loopback: an OpenAI-compatible LLM and the GitHub REST API.

`LLMStandIn` answers ``POST /v1/chat/completions`` for a toy task, *shout*: the right answer
for a text ``t`` is `shout`(t) (upper case plus ``!``). What a model answers depends on the
model name and on the prompt, so a better prompt scores measurably better:

- the *teacher* model always answers right;
- the *student* (task) model answers right when the prompt shows demonstrations (an
  ``### Examples`` section, or DSPy's demos as earlier chat turns) or asks for ``capitals``,
  and otherwise only for texts of even length (it echoes the others in lower case);
- the *judge* model reads ``Task input`` and ``Answer to score`` from its prompt and replies
  ``1`` when the answer is right, else ``0``.

DSPy-formatted requests (``[[ ## field ## ]]`` markers) are answered in that format; other
output fields, and a request for a new instruction in a code block (GEPA's reflection), get
`BETTER_INSTRUCTION` (without its ``{{ text }}`` line when the request has no such
variable; as `CHAT_INSTRUCTION`, with ``[role]`` headers, when the request shows a chat
template's, unless ``drops_roles``). Usage is ``ceil(chars / 4)`` per side. Faults:
`fail_next` answers a status for the next *n* requests; ``malformed`` answers non-JSON;
``judge_no_number`` makes the judge answer words; ``broken_student`` makes the student always
wrong; ``demos_hurt`` makes it wrong whenever the prompt has an ``### Examples`` section (so a
candidate is judged worse than an active prompt that asks for capitals).

`GitHubStandIn` implements the five REST calls a prompt pull request needs and records them.
"""

from __future__ import annotations

import base64
import json
import math
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["BETTER_INSTRUCTION", "CHAT_INSTRUCTION", "GitHubStandIn", "LLMStandIn", "shout"]

BETTER_INSTRUCTION = "Shout the text back in capitals.\nText: {{ text }}"
"""The instruction the teacher proposes; it keeps the ``{{ text }}`` variable."""

CHAT_INSTRUCTION = "[system]\nShout the text back in capitals.\n\n[user]\nText: {{ text }}"
"""The instruction the teacher proposes for a chat template: its messages, the variable kept."""

_FIELD = re.compile(r"\[\[ ## (\w+) ## \]\]\n(.*?)(?=\n\n\[\[ ## |\n\nRespond with|\Z)", re.S)
_TEXT = re.compile(r'"text": "([^"]*)"')
_OUTPUTS = re.compile(r"Your output fields are:\n(.*?)\nAll interactions", re.S)


def shout(text: str) -> str:
    """The right answer of the toy task."""
    return text.upper() + "!"


def _tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / 4))


class _Server(ThreadingHTTPServer):
    daemon_threads = True


class _Base:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms stall

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _body(self) -> Any:
                length = int(self.headers.get("Content-Length", "0"))
                raw = self.rfile.read(length) if length else b""
                return json.loads(raw) if raw else None

            def _reply(self, status: int, payload: Any, raw: bytes | None = None) -> None:
                data = raw if raw is not None else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                owner._handle(self, "GET", None)

            def do_POST(self) -> None:
                owner._handle(self, "POST", self._body())

            def do_PUT(self) -> None:
                owner._handle(self, "PUT", self._body())

        self._httpd = _Server(("127.0.0.1", 0), Handler)
        self.port = int(self._httpd.server_address[1])
        # shutdown() waits for the serving loop's next poll: 0.5 s by default, per test
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def _handle(self, h: Any, method: str, body: Any) -> None:
        raise NotImplementedError

    def __enter__(self) -> Any:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


class LLMStandIn(_Base):
    """``with LLMStandIn(teacher=..., judge=...) as llm: llm.base_url`` (ends in ``/v1``).

    ``requests`` lists ``(model, messages, authorization)`` of every chat request in order.
    """

    def __init__(self, *, teacher: str = "teacher-standin", judge: str = "judge-standin") -> None:
        super().__init__()
        self.teacher = teacher
        self.judge = judge
        self.requests: list[tuple[str, list[dict[str, str]], str | None]] = []
        self.malformed = False
        self.judge_no_number = False
        self.broken_student = False
        self.demos_hurt = False
        self.drops_roles = False
        """The teacher's instructions for a chat template lose its ``[role]`` headers."""
        self.delay = 0.0
        """Seconds each chat answer waits before it is sent (a slower model)."""
        self._fail: list[int] = []

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def fail_next(self, status: int, n: int = 1) -> None:
        """Answer *status* to the next *n* chat requests."""
        with self._lock:
            self._fail += [status] * n

    def models(self) -> list[str]:
        """The model of every request received, in order."""
        with self._lock:
            return [m for m, _, _ in self.requests]

    def _handle(self, h: Any, method: str, body: Any) -> None:
        if method != "POST" or not h.path.endswith("/chat/completions"):
            h._reply(404, {"error": {"message": "not found"}})
            return
        model, messages = body["model"], body["messages"]
        with self._lock:
            self.requests.append((model, messages, h.headers.get("Authorization")))
            fail = self._fail.pop(0) if self._fail else None
        if fail is not None:
            h._reply(fail, {"error": {"message": f"injected {fail}"}})
            return
        if self.delay:
            time.sleep(self.delay)
        if self.malformed:
            h._reply(200, None, raw=b"<html>not json</html>")
            return
        answer = self.answer(model, messages)
        prompt = "".join(m.get("content", "") for m in messages)
        h._reply(200, {
            "id": "chatcmpl-standin", "object": "chat.completion", "created": 1_700_000_000,
            "model": model,
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": answer}}],
            "usage": {"prompt_tokens": _tokens(prompt), "completion_tokens": _tokens(answer),
                      "total_tokens": _tokens(prompt) + _tokens(answer)},
        })

    def answer(self, model: str, messages: list[dict[str, str]]) -> str:
        """The deterministic answer of *model* to *messages*."""
        last = messages[-1].get("content", "")
        if model == self.judge:
            if self.judge_no_number:
                return "The answer looks fine to me."
            given = re.search(r"Answer to score:\n(.*?)\n\nReply with", last, re.S)
            inputs = re.search(r"Task input:\n(.*?)\n\n", last, re.S)
            text = json.loads(inputs.group(1)).get("text", "") if inputs else ""
            right = given is not None and given.group(1).strip() == shout(text)
            return "1" if right else "0"
        system = messages[0].get("content", "") if messages[0].get("role") == "system" else ""
        if "[[ ## " in system:
            return self._dspy_answer(model, system, messages)
        if model == self.teacher and "```" in last:
            return f"```\n{self._instruction(last)}\n```"
        match = re.search(r"^Text: (.*)$", last, re.M)
        found = _TEXT.findall(last)
        text = match.group(1) if match else (found[-1] if found else "")
        if self.demos_hurt and model != self.teacher and "### Examples" in last:
            return text.lower()
        return self._solve(model, text, "### Examples" in last or "capitals" in last)

    def _instruction(self, request: str) -> str:
        # A good teacher keeps the template's variable when the current instruction has it,
        # and a chat template's [role] headers (unless `drops_roles`).
        if "{{ text }}" not in request:
            return BETTER_INSTRUCTION.split("\n")[0]
        if "[system]" in request and "[user]" in request and not self.drops_roles:
            return CHAT_INSTRUCTION
        return BETTER_INSTRUCTION

    def _solve(self, model: str, text: str, has_demos: bool) -> str:
        if self.broken_student and model != self.teacher:
            return text.lower()
        if model == self.teacher or has_demos or len(text) % 2 == 0:
            return shout(text)
        return text.lower()

    def _dspy_answer(self, model: str, system: str, messages: list[dict[str, str]]) -> str:
        wanted = re.findall(r"`(\w+)`", (_OUTPUTS.search(system) or _m("")).group(1))
        fields = dict(_FIELD.findall(messages[-1].get("content", "")))
        has_demos = any(m.get("role") == "assistant" for m in messages) or "capitals" in system
        parts: list[tuple[str, str]] = []
        for name in wanted or ["output"]:
            if name == "output":
                found = _TEXT.findall(fields.get("inputs", ""))
                text = fields.get("text", found[-1] if found else "").strip()
                value = self._solve(model, text, has_demos)
            elif name == "reasoning":
                value = "Shout it."
            else:
                value = self._instruction(messages[-1].get("content", ""))
            parts.append((name, value))
        if "Respond with a JSON object" in messages[-1].get("content", ""):
            return json.dumps(dict(parts))
        return "\n\n".join([*(f"[[ ## {n} ## ]]\n{v}" for n, v in parts),
                            "[[ ## completed ## ]]"])


def _m(text: str) -> re.Match[str]:
    match = re.match(r"(.*)", text)
    assert match is not None
    return match


class GitHubStandIn(_Base):
    """The GitHub REST calls of a prompt pull request, on loopback.

    ``calls`` lists ``(method, path, body)``; ``pulls`` the pull requests opened;
    ``files`` maps ``(branch, path)`` to text. ``pull_status`` (e.g. 422) makes opening a pull
    request fail.
    """

    def __init__(self, *, repo: str = "acme/prompts", path: str = "prompts/shout.txt",
                 text: str = "old prompt\n") -> None:
        super().__init__()
        self.repo = repo
        self.calls: list[tuple[str, str, Any]] = []
        self.pulls: list[dict[str, Any]] = []
        self.files: dict[tuple[str, str], str] = {("main", path): text}
        self.branches: dict[str, str] = {"main": "sha-main"}
        self.pull_status = 201
        self.tokens: list[str | None] = []

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _handle(self, h: Any, method: str, body: Any) -> None:
        path = h.path.split("?", 1)[0]
        query = h.path.split("?", 1)[1] if "?" in h.path else ""
        with self._lock:
            self.calls.append((method, path, body))
            self.tokens.append(h.headers.get("Authorization"))
        prefix = f"/repos/{self.repo}"
        if not path.startswith(prefix):
            h._reply(404, {"message": "Not Found"})
            return
        rest = path[len(prefix):]
        if method == "GET" and rest.startswith("/git/ref/heads/"):
            branch = rest[len("/git/ref/heads/"):]
            if branch not in self.branches:
                h._reply(404, {"message": "Not Found"})
                return
            h._reply(200, {"ref": f"refs/heads/{branch}",
                           "object": {"sha": self.branches[branch]}})
        elif method == "POST" and rest == "/git/refs":
            branch = body["ref"].removeprefix("refs/heads/")
            self.branches[branch] = body["sha"]
            h._reply(201, {"ref": body["ref"], "object": {"sha": body["sha"]}})
        elif rest.startswith("/contents/"):
            file_path = rest[len("/contents/"):]
            ref = query.removeprefix("ref=") if method == "GET" else body.get("branch")
            key = (ref or "main", file_path)
            if method == "GET":
                if key not in self.files:
                    h._reply(404, {"message": "Not Found"})
                    return
                h._reply(200, {"sha": f"blob-{len(self.files[key])}", "path": file_path})
            else:
                self.files[key] = base64.b64decode(body["content"]).decode()
                h._reply(200, {"content": {"path": file_path}, "commit": {"sha": "c1"}})
        elif method == "POST" and rest == "/pulls":
            if self.pull_status != 201:
                h._reply(self.pull_status, {"message": "Validation Failed",
                                            "errors": [{"message": "A pull request already"
                                                        " exists"}]})
                return
            number = len(self.pulls) + 1
            pull = {**body, "number": number,
                    "html_url": f"https://github.test/{self.repo}/pull/{number}"}
            self.pulls.append(pull)
            h._reply(201, pull)
        else:
            h._reply(404, {"message": "Not Found"})
