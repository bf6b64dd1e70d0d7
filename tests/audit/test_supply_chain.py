"""`make test`'s supply-chain step (.ci/supply-chain): bandit fails on an unexplained finding and
not on an explained one; pip-audit fails on a known vulnerability, and when its data cannot be
had it says so plainly without failing."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / ".ci" / "supply-chain"


@pytest.fixture(scope="module")
def step() -> ModuleType:
    loader = importlib.machinery.SourceFileLoader("supply_chain", str(SCRIPT))
    spec = importlib.util.spec_from_loader("supply_chain", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["supply_chain"] = module  # its dataclasses look themselves up there
    loader.exec_module(module)
    return module


def test_bandit_fails_on_a_finding_unless_its_line_says_why(
    step: ModuleType, tmp_path: Path
) -> None:
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "run.py").write_text(
        "import subprocess\n\n\n"
        "def run(command: str) -> None:\n"
        "    subprocess.call(command, shell=True)\n"
        "    subprocess.call(command, shell=True)  # nosec B602 # the operator's own command\n"
    )
    (tmp_path / "tests").mkdir()  # not scanned
    (tmp_path / "tests" / "test_run.py").write_text(
        "import subprocess\nsubprocess.call(input(), shell=True)\n"
    )

    problems = step.bandit(tmp_path)

    assert len(problems) == 1
    assert problems[0].startswith("app/run.py:5: B602 (high)")


def report(*dependencies: dict[str, Any]) -> dict[str, Any]:
    return {"dependencies": list(dependencies), "fixes": []}


CLEAN = {"name": "django", "version": "5.2.19", "vulns": []}
VULNERABLE = {
    "name": "django",
    "version": "4.2.0",
    "vulns": [{"id": "PYSEC-2023-100", "fix_versions": ["4.2.2"], "aliases": []}],
}
SKIPPED = {"name": "django", "skip_reason": "Dependency not found on PyPI and could not be audited"}


def test_a_known_vulnerability_fails_naming_the_pin_and_the_fix(step: ModuleType) -> None:
    passed, lines = step.pip_audit(lambda service: (report(VULNERABLE), "")).summary()

    assert not passed
    assert "pip-audit: django 4.2.0: PYSEC-2023-100 (fixed in 4.2.2)" in lines
    assert any("FAILED" in line for line in lines)


def test_unreachable_data_is_said_plainly_and_does_not_fail(step: ModuleType) -> None:
    answers = {
        "pypi": (report(SKIPPED), ""),
        "osv": (None, "ConnectionError: Failed to resolve 'api.osv.dev'"),
    }
    passed, lines = step.pip_audit(lambda service: answers[service]).summary()

    assert passed
    text = "\n".join(lines)
    assert "NOT AUDITED" in text and "could not be had" in text
    assert "OSV unreachable: ConnectionError: Failed to resolve 'api.osv.dev'" in text
    assert "PyPI's JSON API had no data for: django" in text
    assert "no known vulnerability" not in text


def test_osv_is_asked_only_for_what_pypi_could_not_answer(step: ModuleType) -> None:
    asked: list[str] = []

    def run(service: str) -> tuple[dict[str, Any], str]:
        asked.append(service)
        return report(CLEAN if service == "osv" else SKIPPED), ""

    passed, lines = step.pip_audit(run).summary()

    assert passed and asked == ["pypi", "osv"]
    assert lines == ["pip-audit: 1 pinned packages audited: no known vulnerability"]


def test_osv_is_not_asked_when_pypi_answered_for_every_pin(step: ModuleType) -> None:
    asked: list[str] = []

    def run(service: str) -> tuple[dict[str, Any], str]:
        asked.append(service)
        return report(CLEAN), ""

    assert step.pip_audit(run).summary()[0]
    assert asked == ["pypi"]
