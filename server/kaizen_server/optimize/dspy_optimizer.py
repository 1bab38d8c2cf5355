"""The LLM-backed optimizer of the local server, built on DSPy (the ``optimize`` extra).

The task's prompt template becomes a DSPy program: one predictor whose instructions are the
template, whose input fields are the template's ``{{ variables }}`` and whose output field is
``output``; ``module_type`` picks the shape (``predict``, ``chain_of_thought``). A strategy then
compiles it on the training split of scored feedback:

- ``bootstrap`` -- `dspy.BootstrapFewShot`: the teacher model answers training inputs and the
  answers the judge accepts become demonstrations.
- ``mipro`` -- `dspy.MIPROv2` with ``auto="light"``: the teacher also proposes instructions.
- ``gepa`` -- `dspy.GEPA`: the teacher reflects on judged answers and on the users' text
  comments to rewrite the instructions (chosen by ``auto`` when feedback carries comments).

The candidate is the (possibly new) instructions plus an ``### Examples`` section with the
demonstrations. Instructions that lose or add a ``{{ variable }}`` are rejected and the original
template is kept, so every candidate renders with the same variables as the active prompt; so
are instructions that no longer read as a chat version's messages (the same ``[role]`` headers
in order, each message keeping its variables), so a chat version's candidate keeps its messages.
Instructions longer than `MAX_PROMPT_CHARS` are rejected the same way, and a demonstration that
would take the candidate past it is dropped (both counted in ``rejected_too_long``).

Every LLM call goes through `kaizen_server.llm.client.LLMClient` (retries, usage, budget) via a DSPy
engine; DSPy's own retries and caches are off. `plan` and `estimate` need no DSPy, so the cost
estimate works without the extra; DSPy is imported only inside `optimize`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from kaizen_sdk.models import MAX_PROMPT_CHARS
from kaizen_sdk.templates import keeps_messages
from kaizen_server.evaluate import judge as evaluate
from kaizen_server.evaluate.judge import Sample
from kaizen_server.llm.client import LLMClient, LLMError
from kaizen_server.llm.pricing import PriceTable, estimate_tokens
from kaizen_server.optimize import fewshot as optimizer

__all__ = [
    "DEFAULT_GEPA_METRIC_CALLS",
    "DEFAULT_MAX_DEMOS",
    "MODULE_TYPES",
    "OPTIMIZER_NAME",
    "STRATEGIES",
    "CostPlan",
    "DspyResult",
    "MissingExtraError",
    "OptimizerError",
    "choose_strategy",
    "dspy_version",
    "estimate",
    "optimize",
    "plan",
]

OPTIMIZER_NAME = "dspy"
"""Prefix of the ``optimizer`` recorded on prompt versions (``dspy-bootstrap``, ...)."""

STRATEGIES = ("auto", "bootstrap", "mipro", "gepa")
"""Values of ``evaluator_config["optimizer"]``; ``auto``: ``gepa`` when comments exist."""

MODULE_TYPES = ("predict", "chain_of_thought")
"""Values of a task's ``module_type`` (``None`` means ``predict``)."""

DEFAULT_MAX_DEMOS = 4
"""Demonstrations bootstrapped into a candidate (``evaluator_config["max_demos"]``)."""

DEFAULT_GEPA_METRIC_CALLS = 32
"""Judged rollouts GEPA may spend (``evaluator_config["max_metric_calls"]``)."""

_MIPRO_CANDIDATES = 6  # what auto="light" uses
_GEPA_MINIBATCH = 3
_GEPA_VAL = 8  # GEPA scores every accepted candidate on this many training examples


class OptimizerError(Exception):
    """The optimizer could not produce a candidate; ``str()`` names the cause."""


class MissingExtraError(OptimizerError):
    """DSPy is not installed."""


def _setting(config: Mapping[str, Any], key: str, default: int) -> int:
    value = config.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise OptimizerError(
            f"evaluator_config[{key!r}] must be a positive integer, got {value!r}; change it"
            f" with `kaizen tasks update TASK --evaluator-config '{{\"{key}\": N}}'`"
        )
    return value


def choose_strategy(config: Mapping[str, Any], samples: Sequence[Sample]) -> str:
    """Return the strategy for a task: ``evaluator_config["optimizer"]`` or the ``auto`` choice.

    Raises `OptimizerError` naming the setting for an unknown value.
    """
    name = config.get("optimizer", "auto")
    if name not in STRATEGIES:
        raise OptimizerError(
            f"evaluator_config['optimizer'] is {name!r}; use one of {', '.join(STRATEGIES)}"
        )
    if name == "auto":
        return "gepa" if any(s.comment for s in samples) else "bootstrap"
    return str(name)


@dataclasses.dataclass(frozen=True)
class CostPlan:
    """The LLM calls a job plans, by purpose, and what they are expected to cost."""

    strategy: str
    train_size: int
    val_size: int
    calls: Mapping[str, int]
    max_trials: int | None
    cost_usd: float

    @property
    def total_calls(self) -> int:
        """All planned calls."""
        return sum(self.calls.values())


def plan(strategy: str, train_size: int, val_size: int, config: Mapping[str, Any]) -> tuple[
        dict[str, int], int | None]:
    """Return the planned calls by purpose and the trial count for *strategy*.

    *train_size* counts the training examples with a reference answer (the ones DSPy trains
    on). ``teacher`` and ``judge`` calls during bootstrapping assume every answer is accepted
    (more are made when the judge rejects some); GEPA's figure is its metric-call budget, an
    upper bound (it stops early when its validation examples score perfectly). ``evaluate`` and
    ``judge_eval`` are the held-out comparison, four calls per validation sample.
    """
    demos = min(_setting(config, "max_demos", DEFAULT_MAX_DEMOS), train_size)
    calls = {"evaluate": 2 * val_size, "judge_eval": 2 * val_size}
    trials: int | None = None
    if strategy == "bootstrap":
        calls.update(teacher=demos, judge=demos)
    elif strategy == "mipro":
        # auto="light": demo sets and instruction proposals for each candidate, then trials that
        # each score the whole training split (a minibatch of 35 when it is larger).
        trials = int(max(2 * 2 * math.log2(_MIPRO_CANDIDATES), 1.5 * _MIPRO_CANDIDATES))
        per_trial = min(35, train_size) if train_size > 50 else train_size
        bootstrap = (_MIPRO_CANDIDATES - 2) * demos
        calls.update(teacher=bootstrap + _MIPRO_CANDIDATES + 2,
                     task=(trials + 1) * per_trial, judge=bootstrap + (trials + 1) * per_trial)
    elif strategy == "gepa":
        budget = _setting(config, "max_metric_calls", DEFAULT_GEPA_METRIC_CALLS)
        trials = max(1, budget // _GEPA_MINIBATCH)
        calls.update(task=budget, judge=budget, teacher=trials)
    else:
        raise OptimizerError(f"unknown strategy {strategy!r}")
    return calls, trials


def estimate(
    *,
    strategy: str,
    samples: Sequence[Sample],
    train_size: int,
    val_size: int,
    base_prompt: str,
    task_model: str,
    teacher_model: str,
    judge_model: str,
    rubric: str,
    config: Mapping[str, Any],
    prices: PriceTable,
) -> CostPlan:
    """Price the planned calls from the token sizes of the real *samples*.

    *train_size* counts the training examples with a reference answer (see `plan`).
    """
    calls, trials = plan(strategy, train_size, val_size, config)
    def mean(values: list[float]) -> float:
        return sum(values) / len(values) if values else float(estimate_tokens(base_prompt))

    task_in = mean([estimate_tokens(evaluate.render_template(base_prompt, s.inputs))
                    for s in samples])
    out = mean([estimate_tokens(str(s.correction or s.output or "")) for s in samples])
    judge_in = mean([estimate_tokens("".join(m["content"] for m in evaluate.judge_messages(
        rubric, s, str(s.output)))) for s in samples])
    demo = mean([estimate_tokens(json.dumps(s.inputs or {})) for s in samples]) + out + 5
    demos = min(_setting(config, "max_demos", DEFAULT_MAX_DEMOS), train_size)
    # A candidate carries its demonstrations; DSPy wraps its prompts in ~150 tokens of format.
    cand_in = task_in + demos * demo
    per_call = {
        "evaluate": (task_model, (task_in + cand_in) / 2, out),
        "task": (task_model, cand_in + 150, out + 10),
        "teacher": (teacher_model, task_in + 150, out + 10),
        "judge": (judge_model, judge_in, 2.0),
        "judge_eval": (judge_model, judge_in, 2.0),
    }
    cost = 0.0
    for purpose, count in calls.items():
        model, tin, tout = per_call[purpose]
        cost += count * prices.cost(model, input_tokens=math.ceil(tin),
                                    output_tokens=math.ceil(tout))
    return CostPlan(strategy, train_size, val_size, calls, trials, cost)


@dataclasses.dataclass(frozen=True)
class DspyResult:
    """A compiled candidate: its template text and how it was made."""

    prompt_text: str
    strategy: str
    demos: int
    instructions_changed: bool
    instructions_rejected: bool
    rejected_too_long: int = 0
    """Instructions or demonstrations dropped because the prompt would pass
    `MAX_PROMPT_CHARS`."""


def dspy_version() -> str | None:
    """Return the installed DSPy version, or ``None`` when the extra is missing."""
    try:
        from importlib.metadata import version

        return version("dspy")
    except Exception:
        return None


def _import_dspy() -> Any:
    # DSPy opens a disk cache at import time: keep it out of the home directory, and keep
    # litellm from fetching its price map over the network.
    os.environ.setdefault("DSPY_CACHEDIR", os.path.join(tempfile.gettempdir(),
                                                        "kaizen-dspy-cache"))
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    try:
        import dspy
    except ImportError as exc:
        raise MissingExtraError(
            "the dspy optimizer needs DSPy: install the extra with pip install"
            " 'kaizen-sdk[optimize]', or set KAIZEN_OPTIMIZER=local"
        ) from exc
    dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=False)
    return dspy


class _Engine:
    """A DSPy engine that sends each request through the job's `LLMClient`.

    The first `LLMError` (endpoint down, budget reached) is kept and every later call fails
    fast with it, because DSPy's optimizers count and swallow some errors.
    """

    def __init__(self, llm: LLMClient, model: str, purpose: str, fatal: list[LLMError],
                 on_call: Callable[[], None] | None = None) -> None:
        self._llm = llm
        self._model = model
        self._purpose = purpose
        self._fatal = fatal
        self._on_call = on_call

    def complete(self, request: Any) -> Any:
        from dspy.lm15 import Message, Response, TextPart, Usage

        if self._fatal:
            raise self._fatal[0]
        messages: list[dict[str, str]] = []
        system = request.system
        if system is not None:
            text = system if isinstance(system, str) else "".join(
                getattr(p, "text", "") for p in system)
            messages.append({"role": "system", "content": text})
        messages += [{"role": m.role, "content": m.text or ""} for m in request.messages]
        try:
            answer = self._llm.chat(self._model, messages, purpose=self._purpose,
                                    max_tokens=request.config.max_tokens)
        except LLMError as exc:
            self._fatal.append(exc)
            raise
        if self._on_call is not None:
            self._on_call()
        last = self._llm.calls[-1] if self._llm.calls else None
        usage = Usage(input_tokens=last.input_tokens if last else 0,
                      output_tokens=last.output_tokens if last else 0,
                      total_tokens=(last.input_tokens + last.output_tokens) if last else 0)
        return Response(id=None, model=self._model, message=Message.assistant([TextPart(answer)]),
                        finish_reason="stop", usage=usage)

    def stream(self, request: Any) -> Any:
        from dspy.lm15 import response_to_events

        return response_to_events(self.complete(request))

    def close(self) -> None:
        """Nothing to close: the `LLMClient` belongs to the job."""


def _fields(base_prompt: str) -> list[str]:
    return evaluate.template_variables(base_prompt) or ["inputs"]


def _inputs_of(sample: Sample, fields: Sequence[str]) -> dict[str, str]:
    values = sample.inputs or {}
    if fields == ["inputs"] and "inputs" not in values:
        return {"inputs": json.dumps(values, sort_keys=True, ensure_ascii=False, default=str)}
    return {f: evaluate.render_template(f"{{{{ {f} }}}}", values) for f in fields}


def _candidate_text(base_prompt: str, instructions: str, demos: Sequence[Any],
                    fields: Sequence[str]) -> tuple[str, bool, bool]:
    """Return ``(template, instructions_changed, instructions_rejected)``."""
    text, changed, rejected, _, _ = _candidate(base_prompt, instructions, demos, fields)
    return text, changed, rejected


def _candidate(base_prompt: str, instructions: str, demos: Sequence[Any],
               fields: Sequence[str]) -> tuple[str, bool, bool, int, int]:
    """`_candidate_text` plus the parts rejected for their length and the demos kept."""
    base = base_prompt.split(f"\n\n{optimizer.EXAMPLES_HEADER}\n", 1)[0].rstrip()
    new = instructions.split(f"\n\n{optimizer.EXAMPLES_HEADER}\n", 1)[0].strip()
    keep = set(evaluate.template_variables(base))
    too_long = int(len(new) > MAX_PROMPT_CHARS)
    rejected = bool(new) and (bool(too_long) or
                              set(evaluate.template_variables(new)) != keep
                              or not keeps_messages(base, new))
    chosen = base if rejected or not new else new
    def inputs(demo: Mapping[str, Any]) -> dict[str, Any]:
        if list(fields) == ["inputs"]:  # a template without variables: the JSON of the inputs
            with contextlib.suppress(ValueError, TypeError):
                loaded = json.loads(demo.get("inputs") or "")
                if isinstance(loaded, dict):
                    return loaded
        return {f: demo.get(f) for f in fields}

    examples = [
        optimizer.Example(
            id=f"demo-{i}",
            inputs=inputs(d),
            output=d.get("output"),
            score=1.0,
        )
        for i, d in enumerate(demos)
        if d.get("output") is not None
    ]
    text = optimizer.build_prompt(chosen, examples)
    while len(text) > MAX_PROMPT_CHARS and examples:
        # Drop the longest demonstration until the candidate fits.
        examples.remove(max(examples, key=lambda e: len(optimizer.quote_data(e.demo_output))
                            + len(optimizer.quote_data(e.inputs))))
        too_long += 1
        text = optimizer.build_prompt(chosen, examples)
    return text, chosen.strip() != base.strip(), rejected, too_long, len(examples)


def optimize(
    llm: LLMClient,
    *,
    base_prompt: str,
    train: Sequence[Sample],
    strategy: str,
    module_type: str | None,
    task_model: str,
    teacher_model: str,
    judge_model: str,
    rubric: str,
    config: Mapping[str, Any],
    progress: Callable[[str], None],
) -> DspyResult:
    """Compile a candidate template from *base_prompt* on the training samples.

    *progress* receives step texts such as ``"bootstrapping 3/16"``. Raises `LLMError` for
    endpoint and budget trouble, `MissingExtraError` without DSPy, `OptimizerError` otherwise.
    """
    shape = module_type or "predict"
    if shape not in MODULE_TYPES:
        raise OptimizerError(
            f"the task's module_type is {shape!r}; use one of {', '.join(MODULE_TYPES)}"
            " (`kaizen tasks update TASK --module-type TYPE`)"
        )
    dspy = _import_dspy()
    fields = _fields(base_prompt)
    labeled = [s for s in train if evaluate.reference_answer(s) is not None]
    if not labeled:
        raise OptimizerError(
            "no training feedback has a usable reference answer: send a correction or rate"
            f" some outputs at least {evaluate.REFERENCE_MIN_SCORE}"
        )
    by_key: dict[str, Sample] = {}
    trainset = []
    for s in labeled:
        values = _inputs_of(s, fields)
        ex = dspy.Example(**values, output=evaluate.reference_answer(s), kaizen_id=s.id)
        trainset.append(ex.with_inputs(*fields))
        by_key[s.id] = s

    fatal: list[LLMError] = []
    lock = threading.Lock()
    counter = {"n": 0}
    planned, _ = plan(strategy, len(trainset), 0, config)
    max_demos = min(_setting(config, "max_demos", DEFAULT_MAX_DEMOS), len(trainset))
    # Bootstrapping may try every training example; the searches judge about as planned.
    total = len(trainset) if strategy == "bootstrap" else planned["judge"]
    label = {"bootstrap": "bootstrapping", "mipro": "searching", "gepa": "reflecting"}[strategy]

    def tick() -> None:
        with lock:
            counter["n"] += 1
            n = counter["n"]
        progress(f"{label} {min(n, total)}/{total}")

    def judged(example: Any, prediction: Any) -> float:
        sample = by_key[example.kaizen_id]
        answer = str(getattr(prediction, "output", "") or "")
        try:
            return evaluate.judge(llm, judge_model, rubric, sample, answer)
        except LLMError as exc:  # kept: the searches count metric errors and carry on
            fatal.append(exc)
            raise

    def metric(example: Any, prediction: Any, trace: Any = None) -> Any:
        tick()
        score = judged(example, prediction)
        return score >= evaluate.REFERENCE_MIN_SCORE if trace is not None else score

    def lm(model: str, purpose: str) -> Any:
        engine = _Engine(llm, model, purpose, fatal)
        return dspy.LM(f"openai/{model}", engine=engine, cache=False, num_retries=0)

    signature = dspy.Signature(
        {**{f: dspy.InputField() for f in fields}, "output": dspy.OutputField()}, base_prompt
    )
    student = dspy.ChainOfThought(signature) if shape == "chain_of_thought" \
        else dspy.Predict(signature)
    task_lm, teacher_lm = lm(task_model, "task"), lm(teacher_model, "teacher")
    try:
        # No history: a long-running server must not keep every prompt and answer in memory.
        with dspy.context(lm=task_lm, disable_history=True):
            if strategy == "bootstrap":
                compiled = dspy.BootstrapFewShot(
                    metric=metric, teacher_settings={"lm": teacher_lm},
                    max_bootstrapped_demos=max_demos, max_labeled_demos=0, max_rounds=1,
                    max_errors=1,
                ).compile(student, trainset=trainset)
            elif strategy == "mipro":
                compiled = dspy.MIPROv2(
                    metric=metric, prompt_model=teacher_lm, task_model=task_lm,
                    teacher_settings={"lm": teacher_lm}, max_bootstrapped_demos=max_demos,
                    max_labeled_demos=0, auto="light", num_threads=1, max_errors=1,
                    verbose=False,
                ).compile(student, trainset=trainset, valset=trainset)
            else:
                def gepa_metric(gold: Any, pred: Any, trace: Any = None, pred_name: Any = None,
                                pred_trace: Any = None) -> Any:
                    tick()
                    score = judged(gold, pred)
                    sample = by_key[gold.kaizen_id]
                    notes = [f"judged {score:.2f}"]
                    if sample.comment:
                        notes.append(f"user comment: {sample.comment}")
                    ref = evaluate.reference_answer(sample)
                    if ref is not None:
                        notes.append(f"reference answer: {ref}")
                    return dspy.Prediction(score=score, feedback="; ".join(notes))

                compiled = dspy.GEPA(
                    metric=gepa_metric, reflection_lm=teacher_lm,
                    max_metric_calls=total, num_threads=1, track_stats=False,
                    reflection_minibatch_size=_GEPA_MINIBATCH, use_merge=False,
                ).compile(student, trainset=trainset, valset=trainset[:_GEPA_VAL])
    except LLMError:
        raise
    except Exception as exc:
        if fatal:
            raise fatal[0] from None
        raise OptimizerError(
            f"DSPy {strategy} failed: {type(exc).__name__}: {str(exc)[:300]}"
        ) from None
    if fatal:
        raise fatal[0]
    predictor = compiled.predictors()[0]
    demos = [dict(d) if not isinstance(d, dict) else d for d in
             (getattr(d, "toDict", lambda d=d: d)() for d in predictor.demos)]
    text, changed, rejected, too_long, kept = _candidate(
        base_prompt, predictor.signature.instructions, demos, fields)
    return DspyResult(text, strategy, kept, changed, rejected, too_long)
