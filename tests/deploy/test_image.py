"""deploy/Dockerfile: checkov's Dockerfile policies, and the application contract of the image.

No Docker engine runs here, so the image is not built by the tests; `az acr build` builds it
(deploy/README.md). What can be checked without building is checked.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

from .conftest import REPO, run_tool, tool

DOCKERFILE = REPO / "deploy" / "Dockerfile"
IGNORE = REPO / "deploy" / "Dockerfile.dockerignore"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    result = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            keyword, _, rest = stripped.partition(" ")
            result.append((keyword.upper(), rest.strip()))
    return result


def test_checkov_finds_no_failed_check_in_the_dockerfile() -> None:
    result = run_tool(
        [
            str(tool("checkov")),
            "--framework",
            "dockerfile",
            "--skip-download",
            "--file",
            str(DOCKERFILE),
            "--output",
            "json",
        ]
    )
    report = json.loads(result.stdout)
    summary = report["summary"]
    failed = [f"{c['check_id']}: {c['check_name']}" for c in report["results"]["failed_checks"]]
    assert summary["failed"] == 0, failed
    assert summary["passed"] > 10
    for skipped in report["results"]["skipped_checks"]:
        assert len(skipped["check_result"].get("suppress_comment", "")) > 20, skipped["check_id"]


def test_the_image_is_multi_stage_slim_python_and_runs_as_a_high_uid() -> None:
    steps = instructions()
    bases = [args for keyword, args in steps if keyword == "FROM"]
    assert len(bases) >= 2
    assert all(base.startswith("python:3.11-slim") for base in bases)
    (user,) = [args for keyword, args in steps if keyword == "USER"]
    uid = re.sub(r"\$\{APP_UID\}", "10001", user).split(":")[0]
    assert int(uid) >= 10000
    # Nothing runs after USER as root, and USER is not switched back.
    assert steps[-1][0] == "CMD"


def test_static_files_and_bytecode_are_built_into_the_image() -> None:
    runs = " ".join(args for keyword, args in instructions() if keyword == "RUN")
    assert "manage.py collectstatic --noinput" in runs
    assert "DEBUG=false" in runs
    assert "compileall" in runs  # the root filesystem is read-only at run time
    assert "--only-binary=:all: -r /tmp/requirements.txt" in runs


def test_the_build_gives_every_setting_production_requires() -> None:
    # With DEBUG=false the settings refuse to load without each required variable; a new one
    # missing here would fail collectstatic, and the image build with it.
    (run,) = [args for keyword, args in instructions() if "manage.py collectstatic" in args]
    assignments = run.split("python manage.py collectstatic")[0].split()
    build_env = dict(word.split("=", 1) for word in assignments if "=" in word)
    assert build_env["DEBUG"] == "false"
    clean = {
        k: v for k, v in os.environ.items() if k != "DEBUG" and not k.endswith(("_URL", "_URI"))
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=REPO,
        env={**clean, "FABRIKAM_IGNORE_LOCAL_SERVICES_FILE": "true", **build_env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr


def test_the_default_command_is_the_web_process() -> None:
    (cmd,) = [args for keyword, args in instructions() if keyword == "CMD"]
    command = " ".join(json.loads(cmd))
    assert "gunicorn portal.wsgi:application --bind 0.0.0.0:8000 --worker-tmp-dir /tmp" in command
    assert "--workers ${WEB_CONCURRENCY:-2}" in command


def test_local_state_and_tooling_stay_out_of_the_build_context() -> None:
    ignored = set(IGNORE.read_text().split())
    assert {".git", ".venv", ".local", "*.sqlite3", "celerybeat-schedule*"} <= ignored
    # Development tooling, benches and tests do not ship.
    assert {"devtools", "bench", "tests"} <= ignored
