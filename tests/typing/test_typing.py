"""What type checkers see: the decorated signature, results, ``fn.call()``, the docs samples.

mypy --strict and pyright run on ``usage.py`` (what they reveal is checked exactly), on
``usage_errors.py`` (wrong calls must be errors, so the checks can fail), and on the Python
samples of README.md and every docs page (one file per page, its blocks in order, as a
reader pastes them). Each checker runs once over all of these files, and each test looks at
the lines about its own files. Samples may use a few names a reader brings (``my_llm``); they are
declared in `PREAMBLE`. Re-using a name for another value, as a reader in one interpreter
does, is allowed.
"""

from __future__ import annotations

import pathlib
import re
import shutil
import subprocess
import sys
from collections.abc import Callable

import pytest

HERE = pathlib.Path(__file__).parent
ROOT = HERE.parent.parent
USAGE = HERE / "usage.py"
ERRORS = HERE / "usage_errors.py"
sys.path.insert(0, str(HERE.parent))
from test_docs import extract_blocks  # noqa: E402

PREAMBLE = '''\
# names the samples assume the reader has
def my_llm(text: str) -> str:
    return text
'''
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

REVEALED = [
    "str",
    "str",
    "str",
    "tuple[str, kaizen_sdk.decorators.TaskRun]",
    "typing.Coroutine[Any, Any, int]",
    "tuple[typing.Iterator[str], kaizen_sdk.decorators.TaskRun]",
    "kaizen_sdk.models.Prompt",
    "list[kaizen_sdk.models.Task]",
    "str | None",
    "float",
    "int",
    "kaizen_sdk.decorators.AsyncTaskRun",
    "str",  # a decorated method, bound
    "tuple[str, kaizen_sdk.decorators.TaskRun]",
    "dict[str, Any]",  # the recipe: call_args, messages_for, ct.prompt, labels, openai
    "list[dict[str, str]]",
    "kaizen_sdk._served.ServedPrompt",
    "kaizen_sdk.models.Prompt",
    "str | None",
    "str",
    "kaizen_sdk._served.ServedPrompt",
]
# pyright prints the same types without module paths
PYRIGHT_REVEALED = [re.sub(r"\b(?:kaizen_sdk\.\w+|typing)\.", "", t) for t in REVEALED]


pytestmark = [
    # The four tests share one run of each checker (the `checked` fixture, ~35 s): `slow`
    # starts this file first (tests/conftest.py).
    pytest.mark.slow,
    pytest.mark.timeout(300),
]

SAMPLE_OPTIONS = "# mypy: allow-redefinition, disable-error-code=\"no-redef\"\n"
"""The samples' own mypy options, inline so that one run checks them beside usage*.py."""

# "path:line: error: ..." / "  path:line:col - error: ..." after a "path" heading; a path may
# start with a drive letter
_MYPY_LINE = re.compile(r"^(?P<path>(?:[A-Za-z]:)?[^\s:][^:]*\.py):\d+: ")
_PYRIGHT_LINE = re.compile(
    r"^(?:\s+(?P<diag>(?:[A-Za-z]:)?[^\s:][^:]*\.py):\d+:\d+ - |(?P<head>\S.*\.py)$)"
)


class Output:
    """One checker's output, split by the file each line is about."""

    def __init__(
        self, lines: list[str], files: list[pathlib.Path], line_path: Callable[[str], str | None]
    ) -> None:
        self.by_file: dict[pathlib.Path | None, list[str]] = {}
        owner: pathlib.Path | None = None
        known = {f.resolve(): f for f in files}
        for line in lines:
            path = line_path(line)
            if path is not None:  # else a continuation line, of the file before it
                owner = known.get((ROOT / path).resolve())
            self.by_file.setdefault(owner, []).append(line)

    def lines(self, file: pathlib.Path) -> list[str]:
        """The lines about ``file``, and any about a file not asked for (a module it imports)."""
        return self.by_file.get(file, []) + self.by_file.get(None, [])


def _mypy_path(line: str) -> str | None:
    match = _MYPY_LINE.match(line)
    return match.group("path") if match else None


def _pyright_path(line: str) -> str | None:
    match = _PYRIGHT_LINE.match(line)
    return (match.group("diag") or match.group("head")) if match else None


class Checked:
    """mypy --strict and pyright, each run once over usage.py, usage_errors.py and the samples."""

    def __init__(self, tmp: pathlib.Path) -> None:
        self.samples = _sample_files(tmp)
        files = [USAGE, ERRORS, *self.samples]
        mypy = subprocess.Popen(
            [sys.executable, "-m", "mypy", "--strict", "--no-error-summary",
             # global in mypy; usage*.py call nothing in that package, so it only
             # concerns the samples
             "--untyped-calls-exclude=opentelemetry.instrumentation",
             # a cache of its own (beside the package check's): writing it costs the first
             # run ~20 s, and it spares every later run most of the analysis
             "--cache-dir", str(ROOT / ".mypy_cache" / "typing"), *map(str, files)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        )
        # pyright runs meanwhile: a node process, mostly done while mypy is still at it
        self.pyright_skip = ""
        pyright_lines = self._pyright(files)
        try:
            out, _ = mypy.communicate(timeout=280)
        except subprocess.TimeoutExpired:
            mypy.kill()
            mypy.communicate()
            raise
        self._mypy = Output(out.splitlines(), files, _mypy_path)
        self._pyright_out = Output(pyright_lines, files, _pyright_path)

    def _pyright(self, files: list[pathlib.Path]) -> list[str]:
        exe = shutil.which("pyright", path=str(pathlib.Path(sys.executable).parent))
        if exe is None:
            self.pyright_skip = "pyright is not installed in this environment"
            return []
        try:
            out = subprocess.run(
                [exe, "--pythonpath", sys.executable, *map(str, files)],
                capture_output=True, text=True, timeout=280, cwd=ROOT,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            self.pyright_skip = f"pyright could not run: {exc}"
            return []
        if "error" not in out.stdout and out.returncode not in (0, 1):
            self.pyright_skip = (
                f"pyright could not run (its node package?): {out.stderr.strip()[:200]}"
            )
        return out.stdout.splitlines()

    def mypy(self, file: pathlib.Path) -> list[str]:
        """mypy's lines about one of the checked files."""
        return self._mypy.lines(file)

    def pyright(self, file: pathlib.Path) -> list[str]:
        """pyright's lines about one of the checked files (skips if pyright cannot run)."""
        if self.pyright_skip:
            pytest.skip(self.pyright_skip)
        return self._pyright_out.lines(file)


@pytest.fixture(scope="module")
def checked(tmp_path_factory: pytest.TempPathFactory) -> Checked:
    """Both checkers run once for the module: mypy analyses openai and litellm (thousands of
    modules) for the samples, so one run over every file costs about what the samples alone do."""
    return Checked(tmp_path_factory.mktemp("typing"))


def _sample_files(tmp: pathlib.Path) -> list[pathlib.Path]:
    files = []
    for page in PAGES:
        blocks = [b for b in extract_blocks(page.read_text(encoding="utf-8"), page.name)
                  if b.lang in ("python", "py")]
        if blocks:
            target = tmp / f"sample_{page.stem.replace('-', '_').lower()}.py"
            code = "\n".join(b.code for b in blocks)
            preamble = "" if "def my_llm" in code else PREAMBLE
            target.write_text(SAMPLE_OPTIONS + preamble + code, encoding="utf-8")
            files.append(target)
    assert len(files) >= 5  # README plus the pages with samples
    return files


def test_mypy_strict_sees_precise_types(checked: Checked) -> None:
    lines = checked.mypy(USAGE)
    # older mypy spells builtins with their module ("builtins.str"); newer ones do not
    revealed = [line.split("Revealed type is ", 1)[1].strip('"').replace("builtins.", "")
                for line in lines if "Revealed type is" in line]
    assert [line for line in lines if ": error:" in line] == []
    assert revealed == REVEALED


def test_pyright_sees_precise_types(checked: Checked) -> None:
    lines = checked.pyright(USAGE)
    revealed = [line.split('" is "', 1)[1].rstrip('"') for line in lines if '" is "' in line]
    assert [line for line in lines if " - error:" in line] == []
    assert revealed == PYRIGHT_REVEALED


def test_wrong_calls_are_errors_for_both_checkers(checked: Checked) -> None:
    mypy_errors = [line for line in checked.mypy(ERRORS) if ": error:" in line]
    pyright_errors = [line for line in checked.pyright(ERRORS) if " - error:" in line]
    expected = {i + 1 for i, line in enumerate(ERRORS.read_text().splitlines())
                if line.rstrip().endswith("# error")}
    assert len(expected) == 7
    assert {int(line.split(":")[1]) for line in mypy_errors} == expected
    assert {int(line.split(":")[1]) for line in pyright_errors} == expected


def test_docs_samples_are_clean_for_mypy_strict_and_pyright(checked: Checked) -> None:
    mypy_lines = [line for f in checked.samples for line in checked.mypy(f)]
    assert [line for line in mypy_lines if ": error:" in line] == []
    pyright_lines = [line for f in checked.samples for line in checked.pyright(f)]
    assert [line for line in pyright_lines if " - error:" in line] == []
