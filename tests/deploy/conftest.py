"""Fixtures of the deployment check: the chart rendered for each environment, and the cluster
manifests built, by the real tools in .venv/deploy-tools (see deploy/check.mk).

Nothing here imports the application or needs a database: these tests read manifests only.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "helm" / "drone-delivery"
CLUSTER = REPO / "deploy" / "cluster"
TOOLS_BIN = REPO / ".venv" / "deploy-tools" / "bin"
TOOLBOX = Path(__file__).resolve().parent / "toolbox.py"

ENVIRONMENTS = ("dev", "prod")
RELEASE = "drone-delivery"
# The namespace deploy/cluster creates; the chart renders into it for both environments.
NAMESPACE = "drone-delivery"
# AKS's oldest supported minor at the time of writing; the chart's kubeVersion floor.
KUBE_VERSION = "1.30.0"


def tool(name: str) -> Path:
    """A tool of .venv/deploy-tools, or a failure that says how to get it (never a skip)."""
    path = TOOLS_BIN / name
    if not path.exists():
        pytest.fail(
            f"{path.relative_to(REPO)} is missing: run `make deploy-tools` to install the "
            "deployment check's tools (Helm SDK, kustomize, kubernetes-validate, checkov)",
            pytrace=False,
        )
    return path


def run_tool(args: list[str], *, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=timeout)


def toolbox(*args: str) -> Any:
    result = run_tool([str(tool("python")), str(TOOLBOX), *args])
    if result.returncode != 0:
        pytest.fail(f"toolbox {' '.join(args)} failed:\n{result.stderr}", pytrace=False)
    return json.loads(result.stdout)


def values_files(environment: str) -> list[str]:
    return [str(CHART / "values.yaml"), str(CHART / f"values-{environment}.yaml")]


@pytest.fixture(scope="session")
def rendered() -> dict[str, dict[str, Any]]:
    """environment -> {"manifests": {template: text}, "objects": [{"template", "object"}]}."""
    return {
        env: toolbox("render", str(CHART), RELEASE, NAMESPACE, *values_files(env))
        for env in ENVIRONMENTS
    }


@pytest.fixture(scope="session")
def cluster_build() -> dict[str, Any]:
    """`kubectl kustomize deploy/cluster`, by kustomize's own library: {"yaml", "objects"}."""
    return toolbox("kustomize", str(CLUSTER))


@pytest.fixture(scope="session")
def manifest_dir(
    tmp_path_factory: pytest.TempPathFactory, rendered: dict[str, dict[str, Any]]
) -> Path:
    """Helm's output as files, one per environment, for the command-line validators."""
    directory = tmp_path_factory.mktemp("rendered")
    for env, result in rendered.items():
        manifests = result["manifests"]
        text = "\n---\n".join(
            f"# Source: {name}\n{manifests[name]}"
            for name in sorted(manifests)
            if name.endswith((".yaml", ".yml"))
        )
        (directory / f"{env}.yaml").write_text(text + "\n")
    return directory
