"""What type checkers see: the decorated signature, results, ``fn.call()``, the docs samples.

mypy --strict and pyright run on ``usage.py`` (what they reveal is checked exactly), on
``usage_errors.py`` (wrong calls must be errors, so the checks can fail), and on the Python
samples of README.md and every docs page (one file per page, its blocks in order, as a
reader pastes them). Samples may use a few names a reader brings (``my_llm``); they are
declared in `PREAMBLE`. Re-using a name for another value, as a reader in one interpreter
does, is allowed.
"""

from __future__ import annotations

import pathlib
import re
import shutil
import subprocess
import sys

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
]
# pyright prints the same types without module paths
PYRIGHT_REVEALED = [re.sub(r"\b(?:kaizen_sdk\.\w+|typing)\.", "", t) for t in REVEALED]


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """One mypy cache for the module: the packages' stubs are analysed once."""
    return tmp_path_factory.mktemp("typing")


def _mypy(tmp: pathlib.Path, *files: pathlib.Path, samples: bool = False) -> list[str]:
    extra = ["--allow-redefinition", "--disable-error-code=no-redef",
             "--untyped-calls-exclude=opentelemetry.instrumentation"] if samples else []
    out = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-error-summary", *extra,
         "--cache-dir", str(tmp / "mypy-cache"), *map(str, files)],
        capture_output=True, text=True, timeout=280, cwd=ROOT,
    )
    return out.stdout.splitlines()


def _pyright(*files: pathlib.Path) -> list[str]:
    exe = shutil.which("pyright", path=str(pathlib.Path(sys.executable).parent))
    if exe is None:
        pytest.skip("pyright is not installed in this environment")
    try:
        out = subprocess.run(
            [exe, "--pythonpath", sys.executable, *map(str, files)],
            capture_output=True, text=True, timeout=280, cwd=ROOT,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"pyright could not run: {exc}")
    if "error" not in out.stdout and out.returncode not in (0, 1):
        pytest.skip(f"pyright could not run (its node package?): {out.stderr.strip()[:200]}")
    return out.stdout.splitlines()


def _sample_files(tmp: pathlib.Path) -> list[pathlib.Path]:
    files = []
    for page in PAGES:
        blocks = [b for b in extract_blocks(page.read_text(encoding="utf-8"), page.name)
                  if b.lang in ("python", "py")]
        if blocks:
            target = tmp / f"sample_{page.stem.replace('-', '_').lower()}.py"
            code = "\n".join(b.code for b in blocks)
            preamble = "" if "def my_llm" in code else PREAMBLE
            target.write_text(preamble + code, encoding="utf-8")
            files.append(target)
    assert len(files) >= 5  # README plus the pages with samples
    return files


@pytest.mark.timeout(300)
def test_mypy_strict_sees_precise_types(cache: pathlib.Path) -> None:
    lines = _mypy(cache, USAGE)
    # older mypy spells builtins with their module ("builtins.str"); newer ones do not
    revealed = [line.split("Revealed type is ", 1)[1].strip('"').replace("builtins.", "")
                for line in lines if "Revealed type is" in line]
    assert [line for line in lines if ": error:" in line] == []
    assert revealed == REVEALED


@pytest.mark.timeout(300)
def test_pyright_sees_precise_types() -> None:
    lines = _pyright(USAGE)
    revealed = [line.split('" is "', 1)[1].rstrip('"') for line in lines if '" is "' in line]
    assert [line for line in lines if " - error:" in line] == []
    assert revealed == PYRIGHT_REVEALED


@pytest.mark.timeout(300)
def test_wrong_calls_are_errors_for_both_checkers(cache: pathlib.Path) -> None:
    mypy_errors = [line for line in _mypy(cache, ERRORS) if ": error:" in line]
    pyright_errors = [line for line in _pyright(ERRORS) if " - error:" in line]
    expected = {i + 1 for i, line in enumerate(ERRORS.read_text().splitlines())
                if line.rstrip().endswith("# error")}
    assert len(expected) == 5
    assert {int(line.split(":")[1]) for line in mypy_errors} == expected
    assert {int(line.split(":")[1]) for line in pyright_errors} == expected


@pytest.mark.timeout(300)
def test_docs_samples_are_clean_for_mypy_strict_and_pyright(
    cache: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    files = _sample_files(tmp_path)
    assert [line for line in _mypy(cache, *files, samples=True) if ": error:" in line] == []
    assert [line for line in _pyright(*files) if " - error:" in line] == []
