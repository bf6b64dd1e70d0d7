"""The chart and the cluster manifests pass Helm's strict lint, the Kubernetes schemas and checkov.

Every tool is the real one, from .venv/deploy-tools (`make deploy-tools`):
- Helm v4's own library (helm-python-sdk) renders and lints the chart: no helm binary needed.
- kustomize's own library (pykustomize, kustomize API v0.21) builds deploy/cluster, the same
  code `kubectl kustomize` runs, so a CI machine with only Python needs no kubectl. Its wheel
  declares Python >=3.14 but runs on 3.11; deploy/requirements-check.txt says why it is
  installed with --ignore-requires-python.
- kubernetes-validate --strict checks every object against the Kubernetes 1.30 OpenAPI schemas
  (unknown fields are errors) and against the newest schemas it ships.
- checkov runs its Kubernetes policies offline.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from .conftest import (
    CHART,
    ENVIRONMENTS,
    KUBE_VERSION,
    NAMESPACE,
    REPO,
    run_tool,
    tool,
    toolbox,
    values_files,
)

# Custom resources: kubernetes-validate has no schema for them (it reports "couldn't find
# schema"); test_rules.py checks their fields instead.
CUSTOM_KINDS = {
    ("secrets-store.csi.x-k8s.io/v1", "SecretProviderClass"),
    ("keda.sh/v1alpha1", "ScaledObject"),
    ("keda.sh/v1alpha1", "TriggerAuthentication"),
    ("source.toolkit.fluxcd.io/v1", "GitRepository"),
    ("kustomize.toolkit.fluxcd.io/v1", "Kustomization"),
    ("helm.toolkit.fluxcd.io/v2", "HelmRelease"),
}

WARNING = 2  # helm lint severities: 1 info, 2 warning, 3 error


@pytest.mark.parametrize("environment", [None, *ENVIRONMENTS])
def test_chart_lints_strictly(environment: str | None) -> None:
    files = values_files(environment) if environment else [str(CHART / "values.yaml")]
    report = toolbox("lint", str(CHART), NAMESPACE, f"v{KUBE_VERSION}", *files)
    problems = [m for m in report["messages"] if m["severity"] >= WARNING]
    assert report["total_charts_linted"] == 1
    assert not report["errors"], report["errors"]
    assert not problems, problems


def validate(path: Path, kube_version: str | None) -> list[str]:
    args = [str(tool("kubernetes-validate")), "--strict", str(path)]
    if kube_version:
        args[1:1] = ["--kubernetes-version", kube_version]
    result = run_tool(args)
    lines = result.stdout.splitlines()
    assert result.returncode == 0, result.stdout + result.stderr
    assert not [line for line in lines if line.startswith(("ERROR", "FATAL"))], result.stdout
    return lines


def assert_all_validated(lines: list[str], objects: list[dict[str, Any]]) -> None:
    """Each built-in object passed; the only objects without a schema are known CRDs."""
    builtin = [o for o in objects if (o["apiVersion"], o["kind"]) not in CUSTOM_KINDS]
    passed = [line for line in lines if " passed for resource " in line]
    assert len(passed) == len(builtin), "\n".join(lines)
    for line in lines:
        if line.startswith("WARN"):
            found = re.search(r"kind (\S+) with api version (\S+) ", line)
            assert found, line
            assert (found.group(2), found.group(1)) in CUSTOM_KINDS, line


@pytest.mark.parametrize("kube_version", [KUBE_VERSION, None], ids=["1.30", "newest"])
@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_rendered_objects_match_the_kubernetes_schemas(
    environment: str,
    kube_version: str | None,
    manifest_dir: Path,
    rendered: dict[str, dict[str, Any]],
) -> None:
    objects = [item["object"] for item in rendered[environment]["objects"]]
    lines = validate(manifest_dir / f"{environment}.yaml", kube_version)
    assert_all_validated(lines, objects)


@pytest.mark.parametrize("kube_version", [KUBE_VERSION, None], ids=["1.30", "newest"])
def test_cluster_manifests_build_and_match_the_kubernetes_schemas(
    kube_version: str | None, cluster_build: dict[str, Any], tmp_path: Path
) -> None:
    path = tmp_path / "cluster.yaml"
    path.write_text(cluster_build["yaml"])
    lines = validate(path, kube_version)
    assert_all_validated(lines, cluster_build["objects"])
    kinds = {o["kind"] for o in cluster_build["objects"]}
    expected = {"Namespace", "ResourceQuota", "LimitRange", "NetworkPolicy"}
    assert kinds >= expected | {"GitRepository", "Kustomization", "HelmRelease"}


def test_checkov_finds_no_failed_check(manifest_dir: Path) -> None:
    result = run_tool(
        [
            str(tool("checkov")),
            "--framework",
            "kubernetes",
            "--skip-download",
            # The skip list, each skip with its reason beside it.
            "--config-file",
            str(REPO / "deploy" / "checkov.yaml"),
            "--directory",
            str(manifest_dir),
            "--output",
            "json",
        ],
        timeout=600,
    )
    assert result.stdout.strip(), result.stderr
    report = json.loads(result.stdout)
    reports = report if isinstance(report, list) else [report]
    assert [r["check_type"] for r in reports] == ["kubernetes"]
    summary = reports[0]["summary"]
    failed = reports[0]["results"]["failed_checks"]
    details = [f"{c['check_id']} {c['check_name']}: {c['resource']}" for c in failed]
    assert summary["failed"] == 0, "\n".join(details)
    assert summary["parsing_errors"] == 0
    assert summary["passed"] > 100  # it did look at the workloads
    assert result.returncode == 0, result.stderr
    # A skip in a template is allowed only with a reason.
    for skipped in reports[0]["results"]["skipped_checks"]:
        reason = skipped["check_result"].get("suppress_comment", "")
        assert len(reason) > 20, f"{skipped['check_id']} on {skipped['resource']} has no reason"
