"""The deployment rules of issue 4, asserted on what Helm renders for dev and prod and on the
cluster manifests kustomize builds (fixtures in conftest.py).

Rules: every container has probes (where a probe can mean something), requests, limits and the
restricted security context; every scalable Deployment has an autoscaler and a disruption
budget; beat runs exactly one replica with Recreate; a default deny exists and every allowed
network flow is one of the flows listed here; one workload identity per component; secrets only
as Key Vault files.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import CHART, ENVIRONMENTS, NAMESPACE, REPO, toolbox, values_files

# Who may talk to what: the contract of the application (deploy/README.md). Every destination is
# configured as CIDRs and ports under networkPolicy.destinations in the values.
EGRESS: dict[str, set[str]] = {
    "web": {"postgres", "redis", "mongodb", "serviceBus", "keyVault", "azureMonitor", "entraId"},
    "worker": {
        "postgres",
        "redis",
        "mongodb",
        "serviceBus",
        "keyVault",
        "azureMonitor",
        "entraId",
        "smtp",
        "webhooks",
    },
    "beat": {"postgres", "redis", "serviceBus", "azureMonitor", "entraId"},
    "simulator": {"postgres", "redis", "azureMonitor", "entraId"},
    "migrations": {"postgres", "azureMonitor", "entraId"},
}
# Ports each destination must use (the app's contract), whatever the CIDRs.
PORTS: dict[str, set[int]] = {
    "postgres": {5432},
    "redis": {6380},
    "mongodb": {10255},
    "serviceBus": {5671, 443},
    "keyVault": {443},
    "azureMonitor": {443},
    "entraId": {443},
    "smtp": {587},
    "webhooks": {443},
}
DNS = ("dns", 53)
SECRET_VARIABLES = {
    "SECRET_KEY",
    "DATABASE_URL",
    "REDIS_URL",
    "MONGODB_URI",
    "APPLICATIONINSIGHTS_CONNECTION_STRING",
    "EMAIL_HOST_PASSWORD",
}
WORKLOAD_KINDS = {"Deployment", "Job"}
COMPONENT = "app.kubernetes.io/component"


# --- helpers ------------------------------------------------------------------------------------


def load_values(environment: str) -> dict[str, Any]:
    """values.yaml overlaid with values-<environment>.yaml, the way Helm merges them."""
    values: dict[str, Any] = toolbox("values", *values_files(environment))
    return values


def objects(rendered: dict[str, dict[str, Any]], environment: str) -> list[dict[str, Any]]:
    return [item["object"] for item in rendered[environment]["objects"]]


def of_kind(objs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objs if o["kind"] == kind]


def component(obj: dict[str, Any]) -> str:
    return str(obj["metadata"]["labels"][COMPONENT])


def workloads(objs: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(workload, pod spec) for every Deployment and Job."""
    for obj in objs:
        if obj["kind"] in WORKLOAD_KINDS:
            yield obj, obj["spec"]["template"]["spec"]


def by_component(objs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {component(o): o for o in of_kind(objs, kind)}


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    match = selector.get("matchLabels", {})
    assert not selector.get("matchExpressions"), "matchExpressions are not used by this chart"
    return all(labels.get(k) == v for k, v in match.items())


def annotations_of(obj: dict[str, Any]) -> dict[str, str]:
    return obj["metadata"].get("annotations") or {}


@pytest.fixture(params=ENVIRONMENTS)
def env(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def objs(rendered: dict[str, dict[str, Any]], env: str) -> list[dict[str, Any]]:
    return objects(rendered, env)


@pytest.fixture
def values(env: str) -> dict[str, Any]:
    return load_values(env)


# --- containers ---------------------------------------------------------------------------------


def test_every_container_has_requests_limits_and_the_restricted_security_context(
    objs: list[dict[str, Any]],
) -> None:
    seen = 0
    for workload, pod in workloads(objs):
        name = workload["metadata"]["name"]
        assert pod["automountServiceAccountToken"] is False, name
        pod_security = pod["securityContext"]
        assert pod_security["runAsNonRoot"] is True, name
        assert pod_security["runAsUser"] >= 10000, name
        assert pod_security["seccompProfile"] == {"type": "RuntimeDefault"}, name
        for container in pod.get("initContainers", []) + pod["containers"]:
            seen += 1
            where = f"{name}/{container['name']}"
            resources = container["resources"]
            for bound in ("requests", "limits"):
                assert set(resources[bound]) >= {"cpu", "memory"}, where
            security = container["securityContext"]
            assert security["runAsNonRoot"] is True, where
            assert security["readOnlyRootFilesystem"] is True, where
            assert security["allowPrivilegeEscalation"] is False, where
            assert security.get("privileged", False) is False, where
            assert security["capabilities"] == {"drop": ["ALL"]}, where
            assert security["seccompProfile"] == {"type": "RuntimeDefault"}, where
            # The only writable path is the /tmp emptyDir.
            writable = [m for m in container["volumeMounts"] if not m.get("readOnly")]
            assert [m["mountPath"] for m in writable] == ["/tmp"], where
    assert seen >= 4


def test_the_seed_resources_are_the_web_and_worker_defaults(objs: list[dict[str, Any]]) -> None:
    deployments = by_component(objs, "Deployment")
    for name in ("web", "worker"):
        resources = deployments[name]["spec"]["template"]["spec"]["containers"][0]["resources"]
        assert resources == {
            "requests": {"cpu": "100m", "memory": "350Mi"},
            "limits": {"cpu": "200m", "memory": "500Mi"},
        }


def test_every_long_running_container_has_startup_liveness_and_readiness_probes(
    objs: list[dict[str, Any]],
) -> None:
    for deployment in of_kind(objs, "Deployment"):
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        name = component(deployment)
        if name == "simulator":
            # No health signal to probe yet: skipped in checkov with the reason, dev only.
            skips = " ".join(annotations_of(deployment).values())
            assert "CKV_K8S_8=" in skips and "CKV_K8S_9=" in skips
            continue
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            assert probe in container, f"{name} has no {probe}"


def test_web_probes_use_the_health_endpoints_with_an_allowed_host(
    objs: list[dict[str, Any]], values: dict[str, Any]
) -> None:
    web = by_component(objs, "Deployment")["web"]["spec"]["template"]["spec"]["containers"][0]
    paths = {p: web[p]["httpGet"]["path"] for p in ("startupProbe", "livenessProbe")}
    assert paths == {"startupProbe": "/healthz/live", "livenessProbe": "/healthz/live"}
    assert web["readinessProbe"]["httpGet"]["path"] == "/healthz/ready"
    env = {e["name"]: e.get("value") for e in web["env"]}
    allowed = env["ALLOWED_HOSTS"].split(",")
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        headers = {h["name"]: h["value"] for h in web[probe]["httpGet"]["httpHeaders"]}
        assert headers["Host"] in allowed


def test_worker_probes_detect_a_hung_worker_by_its_heartbeat(objs: list[dict[str, Any]]) -> None:
    worker = by_component(objs, "Deployment")["worker"]["spec"]["template"]["spec"]
    container = worker["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["WORKER_HEARTBEAT_FILE"].startswith("/tmp/")
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        command = container[probe]["exec"]["command"]
        assert command[:3] == ["python", "-m", "workers.liveness"]


def test_beat_probe_checks_that_the_schedule_file_is_rewritten(objs: list[dict[str, Any]]) -> None:
    container = by_component(objs, "Deployment")["beat"]["spec"]["template"]["spec"]["containers"][
        0
    ]
    schedule = container["command"][container["command"].index("--schedule") + 1]
    assert schedule.startswith("/tmp/")
    command = container["livenessProbe"]["exec"]["command"]
    assert command[:2] == ["sh", "-c"]
    found = re.search(r"-name '([^']+)' -mmin -(\d+)", command[2])
    assert found, command
    assert found.group(1) == Path(schedule).name + "*"
    # celery beat syncs at least every 180 s after a loop of at most 300 s: 8 minutes worst case.
    assert int(found.group(2)) * 60 > 180 + 300


def test_every_process_runs_the_same_image(objs: list[dict[str, Any]]) -> None:
    images = {c["image"] for _, pod in workloads(objs) for c in pod["containers"]}
    assert len(images) == 1
    commands = {
        component(w): " ".join(pod["containers"][0]["command"]) for w, pod in workloads(objs)
    }
    assert commands["web"].startswith("gunicorn portal.wsgi:application --bind 0.0.0.0:8000")
    assert commands["worker"].startswith("celery -A portal worker")
    assert commands["beat"].startswith("celery -A portal beat")
    assert commands["migrations"] == "python manage.py migrate --noinput"
    # The modules those commands and probes name are in the repository (read, not imported).
    for module in ("portal/wsgi.py", "portal/celery.py", "workers/liveness.py", "manage.py"):
        assert (REPO / module).is_file(), module


# --- scaling and disruption -------------------------------------------------------------------


def test_each_scalable_deployment_has_an_autoscaler_and_a_disruption_budget(
    objs: list[dict[str, Any]], values: dict[str, Any]
) -> None:
    hpas = {
        h["spec"]["scaleTargetRef"]["name"]: h for h in of_kind(objs, "HorizontalPodAutoscaler")
    }
    scaled = {s["spec"]["scaleTargetRef"]["name"]: s for s in of_kind(objs, "ScaledObject")}
    pdbs = of_kind(objs, "PodDisruptionBudget")
    scalable = [d for d in of_kind(objs, "Deployment") if d["spec"].get("replicas", 2) != 1]
    assert {component(d) for d in scalable} == {"web", "worker"}
    for deployment in scalable:
        name = deployment["metadata"]["name"]
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        if component(deployment) == "worker" and values["worker"]["keda"]["enabled"]:
            # KEDA creates and owns the worker's HPA; a second one would fight it.
            assert name in scaled and name not in hpas
            spec = scaled[name]["spec"]
            assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (2, 5)
        else:
            assert name in hpas and name not in scaled, name
            hpa = hpas[name]
            assert hpa["apiVersion"] == "autoscaling/v2"
            assert hpa["spec"]["minReplicas"] >= 2
            metric = hpa["spec"]["metrics"][0]["resource"]
            assert metric["name"] == "cpu"
            assert metric["target"]["averageUtilization"] == 60
        budgets = [p for p in pdbs if selects(p["spec"]["selector"], labels)]
        assert len(budgets) == 1, name
        # A budget that allows no eviction would block node drains and autoscaler scale-down.
        assert budgets[0]["spec"].get("maxUnavailable", 0) >= 1


def test_prod_autoscales_web_between_2_and_5_pods_at_60_percent_cpu(
    rendered: dict[str, dict[str, Any]],
) -> None:
    hpas = by_component(objects(rendered, "prod"), "HorizontalPodAutoscaler")
    spec = hpas["web"]["spec"]
    assert (spec["minReplicas"], spec["maxReplicas"]) == (2, 5)


def test_worker_scales_on_the_service_bus_queue_with_workload_identity_when_keda_is_on(
    rendered: dict[str, dict[str, Any]],
) -> None:
    prod = objects(rendered, "prod")
    scaled = by_component(prod, "ScaledObject")["worker"]
    triggers = {t["type"]: t for t in scaled["spec"]["triggers"]}
    servicebus = triggers["azure-servicebus"]
    assert servicebus["metadata"]["queueName"] == "celery"
    auth = {a["metadata"]["name"]: a for a in of_kind(prod, "TriggerAuthentication")}
    spec = auth[servicebus["authenticationRef"]["name"]]["spec"]
    assert spec["podIdentity"]["provider"] == "azure-workload"
    # No connection string anywhere: the trigger has no secret reference.
    assert "secretTargetRef" not in spec and "connectionFromEnv" not in servicebus["metadata"]


def test_beat_and_the_simulator_run_one_replica_that_is_stopped_before_its_successor(
    objs: list[dict[str, Any]],
) -> None:
    deployments = by_component(objs, "Deployment")
    singletons = [deployments["beat"]] + (
        [deployments["simulator"]] if "simulator" in deployments else []
    )
    targets = {
        h["spec"]["scaleTargetRef"]["name"] for h in of_kind(objs, "HorizontalPodAutoscaler")
    }
    targets |= {s["spec"]["scaleTargetRef"]["name"] for s in of_kind(objs, "ScaledObject")}
    for deployment in singletons:
        assert deployment["spec"]["replicas"] == 1
        assert deployment["spec"]["strategy"] == {"type": "Recreate"}
        assert deployment["metadata"]["name"] not in targets


def test_the_simulator_is_on_in_dev_and_off_in_prod(rendered: dict[str, dict[str, Any]]) -> None:
    assert "simulator" in by_component(objects(rendered, "dev"), "Deployment")
    assert "simulator" not in by_component(objects(rendered, "prod"), "Deployment")


def test_scalable_pods_spread_across_zones(objs: list[dict[str, Any]]) -> None:
    deployments = by_component(objs, "Deployment")
    for name in ("web", "worker"):
        constraints = deployments[name]["spec"]["template"]["spec"]["topologySpreadConstraints"]
        keys = {c["topologyKey"] for c in constraints}
        assert "topology.kubernetes.io/zone" in keys


def test_migrations_run_as_a_hook_before_install_and_upgrade_after_their_prerequisites(
    objs: list[dict[str, Any]],
) -> None:
    jobs = by_component(objs, "Job")
    job = jobs["migrations"]
    hook = annotations_of(job)
    assert set(hook["helm.sh/hook"].split(",")) == {"pre-install", "pre-upgrade"}
    pod = job["spec"]["template"]["spec"]
    needs = {
        ("ServiceAccount", pod["serviceAccountName"]),
        (
            "SecretProviderClass",
            pod["volumes"][1]["csi"]["volumeAttributes"]["secretProviderClass"],
        ),
    }
    # Its own network policy, which must also allow DNS: the release's shared DNS policy is an
    # ordinary object that does not exist yet on a first install.
    (policy,) = [
        p
        for p in of_kind(objs, "NetworkPolicy")
        if p["spec"]["podSelector"].get("matchLabels", {}).get(COMPONENT) == "migrations"
    ]
    ports = {
        (port["port"], port["protocol"]) for r in policy["spec"]["egress"] for port in r["ports"]
    }
    assert {(53, "UDP"), (53, "TCP")} <= ports
    needs.add(("NetworkPolicy", policy["metadata"]["name"]))
    # Hooks are created before ordinary objects: what the Job needs is a hook of lower weight.
    for kind, name in needs:
        (obj,) = [o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name]
        prerequisite = annotations_of(obj)
        assert prerequisite.get("helm.sh/hook") == hook["helm.sh/hook"], (kind, name)
        assert int(prerequisite["helm.sh/hook-weight"]) < int(hook["helm.sh/hook-weight"])


# --- identity and secrets -----------------------------------------------------------------------


def test_each_component_has_its_own_workload_identity(objs: list[dict[str, Any]]) -> None:
    accounts = {a["metadata"]["name"]: a for a in of_kind(objs, "ServiceAccount")}
    client_ids = []
    for workload, pod in workloads(objs):
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert labels["azure.workload.identity/use"] == "true"
        account = accounts[pod["serviceAccountName"]]
        assert component(account) == component(workload)
        assert account.get("automountServiceAccountToken") is False
        client_ids.append(annotations_of(account)["azure.workload.identity/client-id"])
    assert len(client_ids) == len(set(client_ids)), "components share an identity"


def test_secrets_arrive_only_as_key_vault_files_read_by_their_own_identity(
    objs: list[dict[str, Any]], values: dict[str, Any]
) -> None:
    classes = {c["metadata"]["name"]: c for c in of_kind(objs, "SecretProviderClass")}
    accounts = {a["metadata"]["name"]: a for a in of_kind(objs, "ServiceAccount")}
    for workload, pod in workloads(objs):
        (volume,) = [v for v in pod["volumes"] if "csi" in v]
        assert volume["csi"]["driver"] == "secrets-store.csi.k8s.io"
        spc = classes[volume["csi"]["volumeAttributes"]["secretProviderClass"]]
        assert spc["apiVersion"] == "secrets-store.csi.x-k8s.io/v1"
        parameters = spc["spec"]["parameters"]
        assert spc["spec"]["provider"] == "azure"
        assert parameters["usePodIdentity"] == "false"
        identity = annotations_of(accounts[pod["serviceAccountName"]])
        assert parameters["clientID"] == identity["azure.workload.identity/client-id"]
        mounted = set(re.findall(r"objectName: (\S+)", parameters["objects"]))
        env = {e["name"]: e for e in pod["containers"][0]["env"]}
        assert not SECRET_VARIABLES & set(env), "a secret passed as a plain variable"
        files = {
            name.removesuffix("_FILE"): e["value"]
            for name, e in env.items()
            if name.removesuffix("_FILE") in SECRET_VARIABLES
        }
        others = [e for n, e in env.items() if n.removesuffix("_FILE") not in SECRET_VARIABLES]
        assert not [e for e in others if "/mnt/secrets" in str(e.get("value"))]
        assert files, workload["metadata"]["name"]
        for variable, path in files.items():
            assert path == f"/mnt/secrets/{values['keyVault']['secrets'][variable]}"
            assert Path(path).name in mounted, (workload["metadata"]["name"], variable)
        # The class fetches exactly what the component reads.
        assert mounted == {Path(p).name for p in files.values()}


def test_no_values_file_holds_a_secret() -> None:
    credential = re.compile(
        r"://[^/\s:@]+:[^@\s]+@|AccountKey=|InstrumentationKey=|SharedAccessKey=|\bpassword:\s*\S",
        re.IGNORECASE,
    )
    for path in sorted(CHART.glob("values*.yaml")):
        text = path.read_text()
        assert not credential.search(text), path.name
        for variable in SECRET_VARIABLES:
            # Named only as keys of keyVault.secrets (variable -> Key Vault secret name).
            for line in re.findall(rf"^\s*{variable}:.*$", text, re.MULTILINE):
                assert re.fullmatch(rf"\s*{variable}: [a-z0-9-]+", line), (path.name, line)


# --- network ----------------------------------------------------------------------------------


def default_denies(policies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        p
        for p in policies
        if p["spec"]["podSelector"] == {}
        and set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"}
        and not p["spec"].get("ingress")
        and not p["spec"].get("egress")
    ]


def test_the_chart_and_the_cluster_both_deny_all_traffic_by_default(
    objs: list[dict[str, Any]], cluster_build: dict[str, Any]
) -> None:
    assert len(default_denies(of_kind(objs, "NetworkPolicy"))) == 1
    cluster_policies = of_kind(cluster_build["objects"], "NetworkPolicy")
    (deny,) = default_denies(cluster_policies)
    assert deny["metadata"]["namespace"] == NAMESPACE


def peer(rule_peer: dict[str, Any], values: dict[str, Any]) -> str:
    """Name the destination a policy peer stands for, from the values' CIDRs."""
    dns = values["networkPolicy"]["dns"]
    if "ipBlock" not in rule_peer:
        expected = {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": dns["namespace"]}},
            "podSelector": {"matchLabels": dns["podLabels"]},
        }
        assert rule_peer == expected, rule_peer
        return "dns"
    cidr = rule_peer["ipBlock"]["cidr"]
    ipaddress.ip_network(cidr)
    names = [
        name
        for name, destination in values["networkPolicy"]["destinations"].items()
        if cidr in destination["cidrs"]
        and rule_peer["ipBlock"].get("except", []) == destination.get("except", [])
    ]
    assert names, f"{cidr} is no configured destination"
    return names[0]


def flows(
    policies: list[dict[str, Any]], labels: dict[str, str], values: dict[str, Any]
) -> tuple[set[tuple[str, int]], set[tuple[str, int]]]:
    """(ingress, egress) flows the policies allow for pods with these labels."""
    ingress: set[tuple[str, int]] = set()
    egress: set[tuple[str, int]] = set()
    for policy in policies:
        if not selects(policy["spec"]["podSelector"], labels):
            continue
        for direction, key, out in (("ingress", "from", ingress), ("egress", "to", egress)):
            for rule in policy["spec"].get(direction) or []:
                # A rule without peers or ports would allow everything in that dimension.
                assert rule.get(key) and rule.get("ports"), (policy["metadata"]["name"], rule)
                for p in rule[key]:
                    name = (
                        "appGateway"
                        if direction == "ingress"
                        and p.get("ipBlock", {}).get("cidr")
                        in values["networkPolicy"]["appGatewaySubnetCidrs"]
                        else peer(p, values)
                    )
                    for port in rule["ports"]:
                        assert port["protocol"] in {"TCP", "UDP"}
                        out.add((name, int(port["port"])))
    return ingress, egress


def test_every_allowed_flow_is_listed_and_nothing_else(
    objs: list[dict[str, Any]], values: dict[str, Any]
) -> None:
    policies = of_kind(objs, "NetworkPolicy")
    checked = set()
    for workload, _pod in workloads(objs):
        name = component(workload)
        labels = workload["spec"]["template"]["metadata"]["labels"]
        ingress, egress = flows(policies, labels, values)
        expected_egress = {DNS} | {(d, port) for d in EGRESS[name] for port in PORTS[d]}
        assert egress == expected_egress, name
        assert ingress == ({("appGateway", 8000)} if name == "web" else set()), name
        checked.add(name)
    assert checked >= {"web", "worker", "beat", "migrations"}


def test_webhooks_may_not_reach_private_networks_or_instance_metadata(
    values: dict[str, Any],
) -> None:
    webhooks = values["networkPolicy"]["destinations"]["webhooks"]
    excluded = [ipaddress.ip_network(c) for c in webhooks["except"]]
    for address in ("10.1.2.3", "172.20.0.1", "192.168.1.1", "169.254.169.254"):
        assert any(ipaddress.ip_address(address) in net for net in excluded), address


# --- ingress ----------------------------------------------------------------------------------


def test_ingress_serves_the_public_paths_over_tls_through_the_waf_and_hides_healthz(
    objs: list[dict[str, Any]],
) -> None:
    (ingress,) = of_kind(objs, "Ingress")
    notes = annotations_of(ingress)
    assert ingress["spec"]["ingressClassName"] == "azure-application-gateway"
    assert notes["appgw.ingress.kubernetes.io/appgw-ssl-certificate"]
    assert notes["appgw.ingress.kubernetes.io/ssl-redirect"] == "true"
    assert notes["appgw.ingress.kubernetes.io/waf-policy-for-path"].startswith("/subscriptions/")
    (rule,) = ingress["spec"]["rules"]
    paths = {p["path"]: p for p in rule["http"]["paths"]}
    assert {"/api/", "/track/", "/admin/", "/"} <= set(paths)
    assert not [p for p in paths if p.startswith("/healthz")]
    services = {s["metadata"]["name"] for s in of_kind(objs, "Service")}
    for path in paths.values():
        assert path["pathType"] == "Prefix"
        assert path["backend"]["service"]["name"] in services


# --- namespace and GitOps -----------------------------------------------------------------------


def test_the_namespace_has_a_quota_and_limits(
    rendered: dict[str, dict[str, Any]], cluster_build: dict[str, Any]
) -> None:
    cluster = cluster_build["objects"]
    (namespace,) = of_kind(cluster, "Namespace")
    assert namespace["metadata"]["name"] == NAMESPACE
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    (quota,) = of_kind(cluster, "ResourceQuota")
    assert {"requests.cpu", "requests.memory", "limits.cpu", "limits.memory", "pods"} <= set(
        quota["spec"]["hard"]
    )
    (limits,) = of_kind(cluster, "LimitRange")
    (container,) = limits["spec"]["limits"]
    assert container["defaultRequest"] == {"cpu": "100m", "memory": "350Mi"}
    assert container["default"] == {"cpu": "200m", "memory": "500Mi"}
    # A standalone dev install brings its own.
    dev = objects(rendered, "dev")
    assert of_kind(dev, "ResourceQuota") and of_kind(dev, "LimitRange")


def test_flux_installs_this_chart_with_the_prod_values_from_this_repository(
    cluster_build: dict[str, Any],
) -> None:
    cluster = cluster_build["objects"]
    (source,) = of_kind(cluster, "GitRepository")
    (sync,) = of_kind(cluster, "Kustomization")
    (release,) = of_kind(cluster, "HelmRelease")
    assert sync["spec"]["sourceRef"] == {
        "kind": "GitRepository",
        "name": source["metadata"]["name"],
    }
    assert (REPO / sync["spec"]["path"] / "kustomization.yaml").exists()
    assert sync["spec"]["prune"] is True
    chart = release["spec"]["chart"]["spec"]
    assert chart["sourceRef"]["name"] == source["metadata"]["name"]
    assert (REPO / chart["chart"] / "Chart.yaml").exists()
    assert chart["valuesFiles"][-1].endswith("values-prod.yaml")
    for path in chart["valuesFiles"]:
        assert (REPO / path).exists(), path
    assert release["spec"]["targetNamespace"] == NAMESPACE
    assert release["spec"]["upgrade"]["remediation"]["strategy"] == "rollback"
