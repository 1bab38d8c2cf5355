"""``ct.prompt(task)``: a task's served prompt for code that calls the LLM library itself.

An application that uses only ``ct.instrument(openai)`` (no ``@ct.task``) asks for a task's
prompt in one call: served like a decorated task's (cached, revalidated in the background,
label-aware, the rollout arm chosen stickily by *key*). The messages it renders
(`ServedPrompt.messages_for`, `ServedPrompt.call_args`) carry the task, version, arm and the
variables, so every instrumented call made with them is recorded as that task's trace, with a
feedback entry of its variables and answer: feedback, optimization and rollouts work without
the decorator.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from kaizen_sdk import _default
from kaizen_sdk._config import prompt_label
from kaizen_sdk._http import prompt_key
from kaizen_sdk._prompts import missing_prompt, prompt_fetcher
from kaizen_sdk._record import ServedBy, ServedMessages
from kaizen_sdk._rollout import assignment_key, choose_arm
from kaizen_sdk.models import Prompt

if TYPE_CHECKING:
    from kaizen_sdk.async_client import AsyncCTClient
    from kaizen_sdk.client import CTClient

__all__ = ["ServedPrompt", "aprompt", "prompt"]


class ServedPrompt(Prompt, frozen=True):
    """A prompt version served for *task* (and the rollout arm it was chosen for).

    Its `messages_for` and `call_args` render messages that instrumented ``openai`` and
    ``litellm`` calls record as ``served_task``'s trace, with the version and arm.
    """

    served_task: str = ""
    """The task this prompt was served for."""
    served_arm: str | None = None
    """``"active"`` or ``"candidate"`` while a rollout runs, else ``None``."""

    def messages_for(self, **variables: Any) -> list[dict[str, str]]:
        """`Prompt.messages_for`, marked as this task's served version (a plain list)."""
        rendered = super().messages_for(**variables)
        served = ServedBy(
            task=self.served_task,
            version_id=None if self.id is None else str(self.id),
            version_number=self.version_number,
            arm=self.served_arm,
            template=self.prompt_text,
            variables=dict(variables),
            default=self if self.id is None and self.status == "default" else None,
        )
        return ServedMessages(rendered, served)


def prompt(
    task: str,
    *,
    label: str | None = None,
    key: Any = None,
    default: str | Prompt | None = None,
    client: CTClient | AsyncCTClient | None = None,
) -> ServedPrompt:
    """Return the prompt *task* serves now, for code that calls the LLM library itself.

    Served from the client's cache without I/O once fetched, and revalidated in the
    background like a ``@ct.task``'s prompt; the first call waits at most ``prompt_wait``,
    then uses *default* (without one, `CTError`). *label* (default ``KAIZEN_PROMPT_LABEL``)
    serves the version it names; on the active version a running rollout assigns the arm by
    *key* (the same key, the same version; default: the ``ct.context`` user or session, else
    at random). With ``ct.instrument(openai)``, every call made with the messages it renders
    is recorded as *task*'s trace with the version and arm. In asyncio code use `aprompt`,
    whose first wait leaves the event loop free.

    Example:
        ```python
        served = ct.prompt("summarize_ticket", key=user_id)
        reply = client.chat.completions.create(**served.call_args(ticket=ticket))
        ```
    """
    fallback, owner = _where(task, default, client)
    if owner is None:
        return _serve(task, _no_client(task, fallback), key)
    return _serve(task, prompt_fetcher(owner).get(prompt_key(task, label or prompt_label()),
                                                  fallback), key)


async def aprompt(
    task: str,
    *,
    label: str | None = None,
    key: Any = None,
    default: str | Prompt | None = None,
    client: CTClient | AsyncCTClient | None = None,
) -> ServedPrompt:
    """`prompt` for asyncio code: the same prompt, and the event loop never waits on I/O.

    Once fetched the prompt is served from the cache as by `prompt`; the first call's bounded
    wait (``prompt_wait``) runs in a worker thread, as a decorated ``async def`` task's does,
    so other coroutines run meanwhile.

    Example:
        ```python
        served = await ct.aprompt("summarize_ticket", key=user_id)
        reply = await client.chat.completions.create(**served.call_args(ticket=ticket))
        ```
    """
    fallback, owner = _where(task, default, client)
    if owner is None:
        return _serve(task, _no_client(task, fallback), key)
    fetcher, name = prompt_fetcher(owner), prompt_key(task, label or prompt_label())
    base = fetcher.peek(name, fallback)
    if base is None:  # the first fetch: its bounded wait runs off the event loop
        base = await asyncio.get_running_loop().run_in_executor(None, fetcher.get, name,
                                                                fallback)
    return _serve(task, base, key)


def _where(
    task: str, default: str | Prompt | None, client: CTClient | AsyncCTClient | None
) -> tuple[Prompt | None, CTClient | AsyncCTClient | None]:
    """The default as a `Prompt`, and the client that serves *task* (None: none configured)."""
    if not isinstance(task, str) or not task.strip():
        raise TypeError("ct.prompt needs the task's name, e.g. ct.prompt('summarize_ticket').")
    fallback = (
        Prompt(prompt_text=default, version_number=0, status="default")
        if isinstance(default, str) else default
    )
    return fallback, client if client is not None else _default.client_for_tasks()


def _no_client(task: str, fallback: Prompt | None) -> Prompt:
    if fallback is None:
        raise missing_prompt(task, "no CT client is configured")
    return fallback


def _serve(task: str, base: Prompt, key: Any) -> ServedPrompt:
    """*base* as served for *task*: the rollout arm chosen by *key*, one version."""
    chosen, arm = choose_arm(base, key if key is not None else assignment_key(None, {}))
    fields = {name: getattr(chosen, name) for name in chosen.__struct_fields__}
    fields["rollout"] = None  # the arm is chosen: what is served is one version
    return ServedPrompt(**fields, served_task=task, served_arm=arm)
