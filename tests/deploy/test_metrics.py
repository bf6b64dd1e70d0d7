"""Metrics in the chart: every long-running process serves /metrics on a port of its own pod
(web and live on theirs, the others on METRICS_PORT), the processes with several children sum
them through PROMETHEUS_MULTIPROC_DIR on the pod's emptyDir, only a scraper named in the values
may reach those ports, and neither the Ingress nor the WAF lets /metrics out."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from .conftest import (
    CHART,
    NAMESPACE,
    RELEASE,
    REPO,
    TOOLBOX,
    run_tool,
    tool,
    toolbox,
    values_files,
)
from .test_rules import (
    SERVERS,
    by_component,
    container_of,
    env_of,
    flows,
    load_values,
    of_kind,
    selects,
)

METRICS_PORT = 9100
# The processes without a web server of their own, and those with several children.
OWN_PORT = ("worker", "beat", "simulator")
MULTIPROCESS = ("web", "worker")


def render(tmp_path: Path, extra: str) -> list[dict[str, Any]]:
    given = tmp_path / "extra.yaml"
    given.write_text(extra)
    result = toolbox("render", str(CHART), RELEASE, NAMESPACE, *values_files("dev"), str(given))
    return [item["object"] for item in result["objects"]]


def unscraped(policy: dict[str, Any], scraper: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in policy["spec"].get("ingress") or [] if scraper not in r["from"]]


def mounts_of(container: dict[str, Any]) -> dict[str, str]:
    return {m["mountPath"]: m["name"] for m in container["volumeMounts"]}


def test_every_long_running_process_has_a_metrics_port_and_multiprocess_directory(
    rendered: dict[str, dict[str, Any]],
) -> None:
    objs = [item["object"] for item in rendered["dev"]["objects"]]
    deployments = by_component(objs, "Deployment")
    assert set(OWN_PORT) <= set(deployments)
    for name in OWN_PORT:
        container = container_of(objs, name)
        assert env_of(container)["METRICS_PORT"] == str(METRICS_PORT), name
        assert {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"} in container[
            "ports"
        ], name
    for name in MULTIPROCESS:
        container = container_of(objs, name)
        directory = env_of(container)["PROMETHEUS_MULTIPROC_DIR"]
        # On the pod's emptyDir (the root filesystem is read-only), and a directory of its own.
        volumes = {v["name"]: v for v in deployments[name]["spec"]["template"]["spec"]["volumes"]}
        (mount,) = [path for path in mounts_of(container) if directory.startswith(f"{path}/")]
        assert "emptyDir" in volumes[mounts_of(container)[mount]], name
    for name in ("web", "live"):
        # They serve /metrics themselves, on their own port: no second server.
        assert "METRICS_PORT" not in env_of(container_of(objs, name)), name
    assert "PROMETHEUS_MULTIPROC_DIR" not in env_of(container_of(objs, "beat"))


def test_no_scraper_reaches_the_pods_unless_the_values_name_one(
    rendered: dict[str, dict[str, Any]],
) -> None:
    for environment in ("dev", "prod"):
        objs = [item["object"] for item in rendered[environment]["objects"]]
        assert load_values(environment)["metrics"]["scraper"]["enabled"] is False
        for policy in of_kind(objs, "NetworkPolicy"):
            for rule in policy["spec"].get("ingress") or []:
                assert all("namespaceSelector" not in peer for peer in rule["from"]), policy


def test_a_named_scraper_may_reach_each_metrics_port_and_nothing_else(tmp_path: Path) -> None:
    objs = render(
        tmp_path,
        "metrics:\n  scraper:\n    enabled: true\n"
        "    namespaceLabels: {kubernetes.io/metadata.name: monitoring}\n"
        "    podLabels: {app.kubernetes.io/name: prometheus}\n",
    )
    scraper = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
    }
    expected = {**SERVERS, **dict.fromkeys(OWN_PORT, METRICS_PORT)}
    policies = of_kind(objs, "NetworkPolicy")
    for workload in of_kind(objs, "Deployment") + of_kind(objs, "Job"):
        name = workload["metadata"]["labels"]["app.kubernetes.io/component"]
        labels = workload["spec"]["template"]["metadata"]["labels"]
        scraped = [
            rule
            for policy in policies
            if selects(policy["spec"]["podSelector"], labels)
            for rule in policy["spec"].get("ingress") or []
            if scraper in rule["from"]
        ]
        if name == "migrations":
            assert scraped == [], name
            continue
        (rule,) = scraped
        assert rule == {"from": [scraper], "ports": [{"port": expected[name], "protocol": "TCP"}]}
    # Everything else is as without the scraper: web still admits the gateway and the simulator.
    web = by_component(objs, "Deployment")["web"]["spec"]["template"]["metadata"]["labels"]
    without = [{**p, "spec": {**p["spec"], "ingress": unscraped(p, scraper)}} for p in policies]
    ingress, _ = flows(without, web, load_values("dev"))
    assert ingress == {("appGateway", 8000), ("simulator", 8000)}


@pytest.mark.parametrize("path", ["/metrics", "/metrics/"])
def test_an_ingress_path_under_metrics_fails_the_render(tmp_path: Path, path: str) -> None:
    given = tmp_path / "paths.yaml"
    given.write_text(f"ingress:\n  paths: [/api/, {path}]\n")
    files = [*values_files("prod"), str(given)]
    result = run_tool(
        [str(tool("python")), str(TOOLBOX), "render", str(CHART), RELEASE, NAMESPACE, *files]
    )
    assert result.returncode != 0, result.stdout[-500:]
    assert "must not publish /metrics" in result.stderr, result.stderr[-500:]


def test_the_waf_policy_blocks_metrics_as_it_blocks_healthz() -> None:
    """deploy/README.md's custom rules: one per private path, matched after URL decoding and
    lowercasing, so no spelling of /metrics gets through the gateway."""
    text = (REPO / "deploy" / "README.md").read_text()
    conditions = re.findall(
        r"custom-rule match-condition add .*?--values (\S+)\s*\\\s*--transforms ([^\n]+)",
        text,
        re.DOTALL,
    )
    blocked = {value: transforms.split() for value, transforms in conditions}
    for path in ("/healthz", "/metrics"):
        assert blocked.get(path) == ["UrlDecode", "Lowercase"], blocked


def test_a_scraper_without_labels_fails_the_render(tmp_path: Path) -> None:
    """Without them the rule would admit any pod of any namespace."""
    given = tmp_path / "scraper.yaml"
    given.write_text("metrics:\n  scraper:\n    enabled: true\n    podLabels: {app: prometheus}\n")
    files = [*values_files("prod"), str(given)]
    result = run_tool(
        [str(tool("python")), str(TOOLBOX), "render", str(CHART), RELEASE, NAMESPACE, *files]
    )
    assert result.returncode != 0, result.stdout[-500:]
    assert "metrics.scraper needs namespaceLabels and podLabels" in result.stderr, result.stderr[
        -500:
    ]
