"""Statements in the README and docs that no sample runs, checked against the code.

Each test reads the sentence a user relies on and compares it with the value or signature it
describes: the prompt revalidation interval (troubleshooting), what each ``score`` accepts
(README), and what ``instrument()`` does without an API key (instrumentation).
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from kaizen_sdk import _config
from kaizen_sdk.client import CTClient
from kaizen_sdk.decorators import TaskRun
from kaizen_sdk.integrations._common import TracedResponse

__all__: list[str] = []

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.unit]


def _text(path: str) -> str:
    return " ".join((ROOT / path).read_text().split())  # one line: sentences wrap anywhere


def test_troubleshooting_states_the_real_revalidation_interval() -> None:
    text = _text("docs/troubleshooting.md")
    found = re.search(r"every `prompt_refresh` seconds \(`KAIZEN_PROMPT_REFRESH`, default (\d+)\)",
                      text)
    assert found is not None, "the prompt section names prompt_refresh and its default"
    assert float(found.group(1)) == _config.DEFAULT_PROMPT_REFRESH
    ttl = re.search(r"`cache_ttl` seconds \(`KAIZEN_CACHE_TTL`, default (\d+)\)", text)
    assert ttl is not None and float(ttl.group(1)) == _config.DEFAULT_CACHE_TTL
    # the old claim: other processes wait for the 300 s cache entry to expire
    assert "other processes see the new version when their entry expires" not in text


def test_readme_score_calls_use_only_the_parameters_each_score_takes() -> None:
    text = _text("README.md")
    calls = {
        "run.score": TaskRun.score,
        "response.ct_score": TracedResponse.ct_score,
        "CTClient.score": CTClient.score,
    }
    seen = 0
    for name, function in calls.items():
        accepted = set(inspect.signature(function).parameters)
        for args in re.findall(rf"`{re.escape(name)}\(([^)]*)\)", text):
            seen += 1
            keywords = set(re.findall(r"(\w+)=", args))
            assert keywords <= accepted, f"{name}({args}): {keywords - accepted} not accepted"
    assert seen == 3
    # a correction is CTClient.score's (and log_feedback's) alone
    assert "correction" not in inspect.signature(TaskRun.score).parameters
    assert "correction" in inspect.signature(CTClient.score).parameters
    assert re.search(r"only it takes a `comment` and a `correction`", text)


def test_instrumentation_page_says_instrument_never_raises_without_a_key() -> None:
    # the behaviour: tests/integrations/test_instrument.py
    # (test_a_configuration_problem_runs_calls_untraced_and_logs_it_once)
    text = _text("docs/instrumentation.md")
    assert "`instrument()` raises `CTError`" not in text
    assert re.search(r"without an API key.{0,80}`instrument\(\)` raises nothing: calls run "
                     r"untraced and the reason is logged once", text)
