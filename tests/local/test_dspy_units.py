"""Units of the LLM-backed optimizer: statistics, prices, the LLM client, candidates, strategies.

The strategy tests run DSPy directly against the loopback LLM stand-in (no CT server).
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest
from llm_standin import BETTER_INSTRUCTION, LLMStandIn, shout

from kaizen_server.evaluate import judge as evaluate
from kaizen_server.evaluate.judge import Sample
from kaizen_server.jobs.worker import OptimizerSettings
from kaizen_server.llm.client import BudgetExceeded, LLMClient, LLMError
from kaizen_server.llm.pricing import FALLBACK_PRICE, PriceTable
from kaizen_server.optimize import dspy_optimizer

KEY = "sk-unit-secret-9876"
TEMPLATE = "Answer the request.\nText: {{ text }}"
WORDS = ["apple", "kiwi", "banana", "fig", "cherry", "plum", "grape", "melon"]


def samples(n: int, *, comment: str | None = None) -> list[Sample]:
    out = []
    for i in range(n):
        text = f"{WORDS[i % len(WORDS)]}{i}"
        good = i % 3 != 0
        out.append(Sample(id=f"s{i}", inputs={"text": text},
                          output=shout(text) if good else text.lower(),
                          score=0.9 if good else 0.1, comment=None if good else comment))
    return out


def test_paired_interval_is_student_t() -> None:
    mean, low, high = evaluate.paired_interval([1.0, 0.0, 1.0, 1.0])
    assert mean == 0.75
    assert low == pytest.approx(0.75 - 3.182 * 0.25)
    assert high == pytest.approx(0.75 + 3.182 * 0.25)
    assert evaluate.paired_interval([0.5]) == (0.5, None, None)
    assert evaluate.paired_interval([]) == (0.0, None, None)


@pytest.mark.parametrize(("text", "score"), [
    ("0.8", 0.8), ("Score: 7", 0.7), ("85", 0.85), ("1", 1.0), ("no idea", None), ("150", None),
])
def test_parse_score(text: str, score: float | None) -> None:
    assert evaluate.parse_score(text) == score


def test_reference_answer_prefers_a_correction() -> None:
    assert evaluate.reference_answer(Sample("a", {}, "bad", 0.1, correction="GOOD")) == "GOOD"
    assert evaluate.reference_answer(Sample("b", {}, "fine", 0.9)) == "fine"
    assert evaluate.reference_answer(Sample("c", {}, "bad", 0.1)) is None


def test_render_template_keeps_inputs_visible() -> None:
    assert evaluate.render_template("Say {{ x }}", {"x": "hi"}) == "Say hi"
    assert evaluate.render_template("Say it", {"x": "hi"}) == 'Say it\n\nInput: {"x": "hi"}'


def test_price_table_overrides_and_bad_settings() -> None:
    prices = PriceTable({"llama3": (0, 0)}, environ={"KAIZEN_LLM_PRICES": '{"m": [1, 2]}'})
    assert prices.price("llama3") == (0.0, 0.0)
    assert prices.cost("m", input_tokens=1_000_000, output_tokens=500_000) == 2.0
    assert prices.price("openai/gpt-4o-mini") == (0.15, 0.60)
    assert prices.price("never-heard-of-it") == FALLBACK_PRICE
    with pytest.raises(ValueError, match="KAIZEN_LLM_PRICES is not valid JSON"):
        PriceTable(environ={"KAIZEN_LLM_PRICES": "{"})
    with pytest.raises(ValueError, match="the price of 'm' must be"):
        PriceTable({"m": (1.0, -1.0)}, environ={})


def _client(handler: httpx.MockTransport, **kwargs: object) -> LLMClient:
    return LLMClient("http://llm.test/v1", KEY, prices=PriceTable(environ={}), backoff=0,
                     transport=handler, **kwargs)  # type: ignore[arg-type]


def _ok(content: str, usage: bool = True) -> httpx.Response:
    body: dict[str, object] = {"choices": [{"message": {"content": content}}]}
    if usage:
        body["usage"] = {"prompt_tokens": 1000, "completion_tokens": 100}
    return httpx.Response(200, json=body)


@pytest.mark.parametrize(("status", "expected"), [
    (401, "KAIZEN_LLM_API_KEY"), (404, "--teacher-model MODEL --judge-model MODEL"),
    (400, "HTTP 400"),
])
def test_llm_errors_name_the_setting_and_never_the_key(status: int, expected: str) -> None:
    llm = _client(httpx.MockTransport(
        lambda r: httpx.Response(status, text=f"bad request with key {KEY}")))
    with pytest.raises(LLMError) as info:
        llm.chat("m", [{"role": "user", "content": "hi"}], purpose="task")
    assert expected in str(info.value)
    assert KEY not in str(info.value) and KEY not in repr(llm)
    assert info.value.__cause__ is None


def test_llm_retries_are_bounded_and_counted() -> None:
    answers = iter([httpx.Response(503), httpx.Response(429, headers={"Retry-After": "0"}),
                    _ok("fine")])
    llm = _client(httpx.MockTransport(lambda r: next(answers)))
    assert llm.chat("m", [{"role": "user", "content": "hi"}], purpose="task") == "fine"
    assert llm.retries == 2 and llm.calls[0].retries == 2
    failing = _client(httpx.MockTransport(lambda r: httpx.Response(500)), max_retries=3)
    with pytest.raises(LLMError, match="after 3 retries"):
        failing.chat("m", [{"role": "user", "content": "hi"}], purpose="task")
    assert failing.retries == 3 and failing.calls == []


def test_llm_budget_stops_new_calls_and_usage_is_tracked() -> None:
    llm = LLMClient("http://llm.test/v1", None, prices=PriceTable({"m": (1.0, 10.0)}, environ={}),
                    budget_usd=0.0015, transport=httpx.MockTransport(lambda r: _ok("x")))
    llm.chat("m", [{"role": "user", "content": "a"}], purpose="task")  # $0.002 > budget
    with pytest.raises(BudgetExceeded, match="raise the task's cost_budget"):
        llm.chat("m", [{"role": "user", "content": "b"}], purpose="task")
    summary = llm.summary()
    assert summary["llm_calls"] == 1 and summary["spent_usd"] == 0.002
    assert summary["calls"][0] == {"model": "m", "purpose": "task", "input_tokens": 1000,
                                   "output_tokens": 100, "cost_usd": 0.002, "retries": 0,
                                   "usage_reported": True, "charged_usd": 0.002}
    guess = _client(httpx.MockTransport(lambda r: _ok("12345678", usage=False)))
    guess.chat("m", [{"role": "user", "content": "abcd"}], purpose="judge")
    assert (guess.calls[0].input_tokens, guess.calls[0].output_tokens) == (1, 2)
    assert guess.calls[0].usage_reported is False


def test_settings_resolve_and_hide_the_key() -> None:
    env = {"KAIZEN_OPTIMIZER": "DSPY", "KAIZEN_LLM_BASE_URL": "http://x/v1",
           "KAIZEN_LLM_API_KEY": KEY}
    settings = OptimizerSettings.resolve(environ=env)
    assert (settings.optimizer, settings.llm_base_url, settings.llm_api_key) == (
        "dspy", "http://x/v1", KEY)
    assert KEY not in repr(settings)
    assert OptimizerSettings.resolve("local", environ=env).optimizer == "local"
    with pytest.raises(ValueError, match="KAIZEN_OPTIMIZER"):
        OptimizerSettings.resolve("magic", environ={})


def test_import_needs_no_dspy() -> None:
    code = ("import sys, kaizen_sdk, kaizen_server, kaizen_server.jobs.worker, kaizen_sdk.cli; "
            "assert 'dspy' not in sys.modules, 'dspy imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_choose_strategy() -> None:
    assert dspy_optimizer.choose_strategy({}, samples(6)) == "bootstrap"
    assert dspy_optimizer.choose_strategy({}, samples(6, comment="too quiet")) == "gepa"
    assert dspy_optimizer.choose_strategy({"optimizer": "mipro"}, samples(6)) == "mipro"
    with pytest.raises(dspy_optimizer.OptimizerError, match="evaluator_config\\['optimizer'\\]"):
        dspy_optimizer.choose_strategy({"optimizer": "sgd"}, [])


def test_candidate_keeps_the_template_variables() -> None:
    demos = [{"text": "kiwi1", "output": "KIWI1!"}]
    text, changed, rejected = dspy_optimizer._candidate_text(
        TEMPLATE, "Be loud.", demos, ["text"])
    assert rejected and not changed
    assert text.startswith(TEMPLATE + "\n\n### Examples\n")
    text, changed, rejected = dspy_optimizer._candidate_text(
        TEMPLATE + "\n\n### Examples\n\nExample 1:\nold", "Be loud: {{text}}", demos, ["text"])
    assert changed and not rejected
    assert text.startswith("Be loud: {{text}}\n\n### Examples") and "old" not in text
    assert evaluate.template_variables(text) == ["text"]


@pytest.fixture
def standin() -> Iterator[LLMStandIn]:
    pytest.importorskip("dspy", reason="the optimize extra (DSPy) is not installed")
    with LLMStandIn() as s:
        yield s


@pytest.mark.parametrize("strategy", ["gepa", "mipro"])
def test_search_strategies_improve_the_prompt_and_keep_variables(
    standin: LLMStandIn, strategy: str
) -> None:
    data = samples(15 if strategy == "gepa" else 9, comment="should be in capitals")
    train, val = data[:-6], data[-6:]
    llm = LLMClient(standin.base_url, KEY, prices=PriceTable(environ={}))
    config = {"max_demos": 2}
    started = time.monotonic()
    result = dspy_optimizer.optimize(
        llm, base_prompt=TEMPLATE, train=train, strategy=strategy, module_type=None,
        task_model="student-standin", teacher_model="teacher-standin",
        judge_model="judge-standin", rubric=evaluate.DEFAULT_RUBRIC, config=config,
        progress=lambda step: None,
    )
    optimize_calls = len(llm.calls)
    comparison = evaluate.compare(
        llm, task_model="student-standin", judge_model="judge-standin",
        rubric=evaluate.DEFAULT_RUBRIC, candidate=result.prompt_text, active=TEMPLATE,
        samples=val,
    )
    elapsed = time.monotonic() - started
    llm.close()
    assert result.strategy == strategy
    assert evaluate.template_variables(result.prompt_text) == ["text"]
    assert comparison.candidate_mean > comparison.active_mean
    if strategy == "gepa":
        assert result.instructions_changed
        assert result.prompt_text.startswith(BETTER_INSTRUCTION)
    labeled = sum(1 for s in train if evaluate.reference_answer(s) is not None)
    planned, _ = dspy_optimizer.plan(strategy, labeled, len(val), config)
    planned_optimize = sum(v for k, v in planned.items() if k not in ("evaluate", "judge_eval"))
    # GEPA's figure is its budget, an upper bound; MIPROv2's follows its light settings.
    assert 0 < optimize_calls <= planned_optimize * 1.25, (optimize_calls, planned)
    print(f"{strategy}: {optimize_calls} optimization calls (planned {planned_optimize}),"
          f" {elapsed:.1f} s")


@pytest.mark.parametrize("strategy", ["gepa", "mipro"])
def test_search_strategies_stop_on_a_judge_without_a_number(
    standin: LLMStandIn, strategy: str
) -> None:
    standin.judge_no_number = True
    llm = LLMClient(standin.base_url, KEY, prices=PriceTable(environ={}))
    with pytest.raises(evaluate.JudgeError, match="returned no score"):
        dspy_optimizer.optimize(
            llm, base_prompt=TEMPLATE, train=samples(9), strategy=strategy, module_type=None,
            task_model="student-standin", teacher_model="teacher-standin",
            judge_model="judge-standin", rubric=evaluate.DEFAULT_RUBRIC,
            config={"max_demos": 2}, progress=lambda step: None,
        )
    llm.close()
    assert len(llm.calls) < 10  # the first failure stops the search


def test_chain_of_thought_module_type(standin: LLMStandIn) -> None:
    llm = LLMClient(standin.base_url, KEY, prices=PriceTable(environ={}))
    result = dspy_optimizer.optimize(
        llm, base_prompt=TEMPLATE, train=samples(9), strategy="bootstrap",
        module_type="chain_of_thought", task_model="student-standin",
        teacher_model="teacher-standin", judge_model="judge-standin",
        rubric=evaluate.DEFAULT_RUBRIC, config={"max_demos": 2}, progress=lambda step: None,
    )
    llm.close()
    assert result.demos == 2 and "Shout it." not in result.prompt_text  # no reasoning shown
    assert evaluate.template_variables(result.prompt_text) == ["text"]
    with pytest.raises(dspy_optimizer.OptimizerError, match="module_type is 'tree'"):
        dspy_optimizer.optimize(
            llm, base_prompt=TEMPLATE, train=samples(9), strategy="bootstrap",
            module_type="tree", task_model="s", teacher_model="t", judge_model="j",
            rubric="", config={}, progress=lambda step: None,
        )
