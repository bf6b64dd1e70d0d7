"""The deployment rules of issue 4, asserted on what Helm renders for dev and prod and on the
cluster manifests kustomize builds (fixtures in conftest.py).

Rules: every container has probes, requests, limits and the restricted security context; every
scalable Deployment has an autoscaler and a disruption budget; beat and the simulator run
exactly one replica with Recreate; a default deny exists and every allowed network flow is one
of the flows listed here; one workload identity per component; secrets only as Key Vault files;
the Ingresses route /live/ to live and the rest to web; the namespace quota holds the chart at
full scale.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from .conftest import (
    CHART,
    ENVIRONMENTS,
    NAMESPACE,
    RELEASE,
    REPO,
    run_tool,
    tool,
    toolbox,
    values_files,
)

# Who may talk to what: the contract of the application (deploy/README.md). Every destination is
# configured as CIDRs and ports under networkPolicy.destinations in the values, except the
# release's own components (SERVERS), reached as their pods on their container ports.
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
    "simulator": {"web", "postgres", "redis", "azureMonitor", "entraId"},
    "live": {"postgres", "redis", "azureMonitor", "entraId"},
    "migrations": {"postgres", "azureMonitor", "entraId"},
}
# The components that serve HTTP, and on which container port.
SERVERS: dict[str, int] = {"web": 8000, "live": 8001}
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
    **{name: {port} for name, port in SERVERS.items()},
}
# What /healthz/ready checks, and the destination each check needs.
READINESS_DEPENDENCIES = {
    "database": "postgres",
    "redis": "redis",
    "mongodb": "mongodb",
    "broker": "serviceBus",
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


def container_of(objs: list[dict[str, Any]], name: str) -> dict[str, Any]:
    """The one container of a component's Deployment."""
    (container,) = by_component(objs, "Deployment")[name]["spec"]["template"]["spec"]["containers"]
    return dict(container)


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in container["env"]}


def quantity(value: str | int | float) -> float:
    """A Kubernetes quantity (cpu or memory) as a number: cores, or bytes."""
    text = str(value)
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "k": 1e3, "M": 1e6, "G": 1e9}
    for suffix in sorted(units, key=len, reverse=True):
        if text.endswith(suffix):
            return float(text.removesuffix(suffix)) * units[suffix]
    return float(text)


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
    for name, memory in (("web", ("350Mi", "500Mi")), ("worker", ("450Mi", "640Mi"))):
        resources = deployments[name]["spec"]["template"]["spec"]["containers"][0]["resources"]
        assert resources == {
            "requests": {"cpu": "100m", "memory": memory[0]},
            "limits": {"cpu": "200m", "memory": memory[1]},
        }


def test_every_long_running_container_has_startup_liveness_and_readiness_probes(
    objs: list[dict[str, Any]],
) -> None:
    names = set()
    for deployment in of_kind(objs, "Deployment"):
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        name = component(deployment)
        names.add(name)
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            assert probe in container, f"{name} has no {probe}"
        # No component is exempt from checkov's probe checks any more.
        assert not [k for k in annotations_of(deployment) if k.startswith("checkov.io/skip")]
    assert names >= {"web", "worker", "beat", "live"}


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


def test_live_probes_use_the_health_endpoints_on_its_own_port_with_an_allowed_host(
    objs: list[dict[str, Any]], values: dict[str, Any]
) -> None:
    live = container_of(objs, "live")
    (port,) = live["ports"]
    assert port == {"name": "http", "containerPort": values["live"]["port"], "protocol": "TCP"}
    assert port["containerPort"] == SERVERS["live"]
    allowed = env_of(live)["ALLOWED_HOSTS"].split(",")
    paths = {}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        get = live[probe]["httpGet"]
        assert get["port"] in ("http", port["containerPort"]), probe
        headers = {h["name"]: h["value"] for h in get["httpHeaders"]}
        assert headers["Host"] in allowed
        paths[probe] = get["path"]
    assert paths == {
        "startupProbe": "/healthz/live",
        "livenessProbe": "/healthz/live",
        "readinessProbe": "/healthz/ready",
    }


def test_live_readiness_checks_only_the_dependencies_its_network_policy_allows(
    objs: list[dict[str, Any]],
) -> None:
    checks = env_of(container_of(objs, "live"))["HEALTHCHECK_READY_CHECKS"].split(",")
    assert checks
    for check in checks:
        assert READINESS_DEPENDENCIES[check] in EGRESS["live"], check


def test_live_runs_uvicorn_on_its_port_and_lets_streams_end_before_it_is_killed(
    objs: list[dict[str, Any]], values: dict[str, Any]
) -> None:
    deployment = by_component(objs, "Deployment")["live"]
    pod = deployment["spec"]["template"]["spec"]
    command = pod["containers"][0]["command"]
    assert command[:2] == ["uvicorn", "portal.asgi:application"]
    options: dict[str, str | None] = {}
    for word, following in zip(command[2:], [*command[3:], ""], strict=True):
        if word.startswith("--"):
            options[word] = None if following.startswith("--") or not following else following
    assert options["--host"] == "0.0.0.0"  # noqa: S104 - inside the pod, behind its policy
    # As the Procfile runs it: no lifespan (Django has none), no line per feed opened.
    assert options["--lifespan"] == "off" and "--no-access-log" in options
    assert options["--port"] == str(values["live"]["port"])
    grace = int(options["--timeout-graceful-shutdown"] or 0)
    assert grace < pod["terminationGracePeriodSeconds"]
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert (REPO / "portal" / "asgi.py").is_file()


def test_worker_probes_detect_a_hung_worker_by_its_heartbeat(objs: list[dict[str, Any]]) -> None:
    worker = by_component(objs, "Deployment")["worker"]["spec"]["template"]["spec"]
    container = worker["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["WORKER_HEARTBEAT_FILE"].startswith("/tmp/")
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        command = container[probe]["exec"]["command"]
        assert command[:3] == ["python", "-m", "workers.liveness"]


def test_simulator_probes_read_the_heartbeat_file_it_writes_on_tmp(
    rendered: dict[str, dict[str, Any]],
) -> None:
    dev = objects(rendered, "dev")
    pod = by_component(dev, "Deployment")["simulator"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    heartbeat = env_of(container)["SIMULATOR_HEARTBEAT_FILE"]
    assert heartbeat == "/tmp/simulator-heartbeat"
    # /tmp is the pod's writable emptyDir, as for the worker.
    (tmp,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == tmp["name"]]
    assert "emptyDir" in volume
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        command = container[probe]["exec"]["command"]
        assert command == [
            "python",
            "-m",
            "workers.liveness",
            "--file",
            heartbeat,
            "--max-age",
            "30",
        ], probe
    # A fresh install waits for web (migrations, then startup) before the first heartbeat.
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 180


def test_simulator_calls_the_web_service_by_a_name_web_allows(
    rendered: dict[str, dict[str, Any]],
) -> None:
    dev = objects(rendered, "dev")
    url = urlsplit(env_of(container_of(dev, "simulator"))["FLEET_SIM_API_URL"])
    assert url.scheme == "http"
    services = {s["metadata"]["name"]: s for s in of_kind(dev, "Service")}
    service = services[url.hostname]
    assert component(service) == "web"
    (port,) = [p for p in service["spec"]["ports"] if p["port"] == url.port]
    web = container_of(dev, "web")
    (target,) = [p for p in web["ports"] if port["targetPort"] in (p["name"], p["containerPort"])]
    assert target["containerPort"] == SERVERS["web"]
    # Django checks the Host header: the Service's name is the Host the simulator sends.
    assert url.hostname in env_of(web)["ALLOWED_HOSTS"].split(",")
    # Without the simulator the name is not allowed: only the public host is.
    prod_web = container_of(objects(rendered, "prod"), "web")
    assert env_of(prod_web)["ALLOWED_HOSTS"] == load_values("prod")["host"]


def test_every_process_links_to_the_public_host_over_https(
    objs: list[dict[str, Any]], values: dict[str, Any]
) -> None:
    # The settings refuse to start without PUBLIC_BASE_URL when DEBUG is off.
    bases = {
        component(w): env_of(pod["containers"][0]).get("PUBLIC_BASE_URL")
        for w, pod in workloads(objs)
    }
    assert set(bases.values()) == {f"https://{values['host']}"}, bases


def test_a_public_base_url_given_in_the_values_is_kept(tmp_path: Path) -> None:
    given = tmp_path / "public-base-url.yaml"
    given.write_text("env:\n  PUBLIC_BASE_URL: https://www.fabrikam.example/drones\n")
    rendered = toolbox("render", str(CHART), RELEASE, NAMESPACE, *values_files("prod"), str(given))
    web = container_of([item["object"] for item in rendered["objects"]], "web")
    (base,) = [e["value"] for e in web["env"] if e["name"] == "PUBLIC_BASE_URL"]
    assert base == "https://www.fabrikam.example/drones"


def test_every_process_flies_the_fleet_at_the_same_speedup(
    objs: list[dict[str, Any]], values: dict[str, Any]
) -> None:
    expected = values["simulator"]["speedup"] if values["simulator"]["enabled"] else 1
    speedups = {
        component(w): env_of(pod["containers"][0])["FLEET_SIM_SPEEDUP"]
        for w, pod in workloads(objs)
    }
    assert set(speedups.values()) == {str(expected)}, speedups


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
    assert commands["live"].startswith("uvicorn portal.asgi:application --host 0.0.0.0")
    assert commands["migrations"] == "python manage.py migrate --noinput"
    if "simulator" in commands:
        assert commands["simulator"] == "python manage.py simulate_fleet"
    # The modules those commands and probes name are in the repository (read, not imported).
    for module in (
        "portal/wsgi.py",
        "portal/asgi.py",
        "portal/celery.py",
        "workers/liveness.py",
        "drones/management/commands/simulate_fleet.py",
        "manage.py",
    ):
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
    assert {component(d) for d in scalable} == {"web", "worker", "live"}
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
    for name in ("web", "worker", "live"):
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
    """Name the destination a policy peer stands for: a component of the release (its pods),
    the cluster DNS, or a destination of the values (by its CIDRs)."""
    dns = values["networkPolicy"]["dns"]
    if set(rule_peer) == {"podSelector"}:
        # A pod selector alone: pods of the release's namespace, which must be one component's.
        labels = rule_peer["podSelector"]["matchLabels"]
        assert labels["app.kubernetes.io/instance"] == "drone-delivery", rule_peer
        assert not rule_peer["podSelector"].get("matchExpressions"), rule_peer
        return str(labels[COMPONENT])
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
    running = {component(w) for w, _pod in workloads(objs)}
    checked = set()
    for workload, _pod in workloads(objs):
        name = component(workload)
        labels = workload["spec"]["template"]["metadata"]["labels"]
        ingress, egress = flows(policies, labels, values)
        expected_egress = {DNS} | {(d, port) for d in EGRESS[name] for port in PORTS[d]}
        assert egress == expected_egress, name
        expected_ingress = set()
        if name in SERVERS:
            # The Application Gateway, and the release's components that call this one.
            clients = {"appGateway"} | {c for c in running if name in EGRESS[c]}
            expected_ingress = {(client, SERVERS[name]) for client in clients}
        assert ingress == expected_ingress, name
        checked.add(name)
    assert checked >= {"web", "worker", "beat", "live", "migrations"}


def test_the_simulator_may_reach_web_and_web_admits_it(
    rendered: dict[str, dict[str, Any]],
) -> None:
    dev = objects(rendered, "dev")
    values = load_values("dev")
    policies = of_kind(dev, "NetworkPolicy")
    deployments = by_component(dev, "Deployment")
    simulator = deployments["simulator"]["spec"]["template"]["metadata"]["labels"]
    web = deployments["web"]["spec"]["template"]["metadata"]["labels"]
    assert ("web", 8000) in flows(policies, simulator, values)[1]
    assert ("simulator", 8000) in flows(policies, web, values)[0]
    # The web pods' port: what the Service forwards to, what the policies see.
    (port,) = deployments["web"]["spec"]["template"]["spec"]["containers"][0]["ports"]
    assert port["containerPort"] == 8000
    # In prod the simulator is off and nothing but the gateway reaches web.
    prod = objects(rendered, "prod")
    prod_web = by_component(prod, "Deployment")["web"]["spec"]["template"]["metadata"]["labels"]
    ingress, _ = flows(of_kind(prod, "NetworkPolicy"), prod_web, load_values("prod"))
    assert ingress == {("appGateway", 8000)}


def test_webhooks_may_not_reach_private_networks_or_instance_metadata(
    values: dict[str, Any],
) -> None:
    webhooks = values["networkPolicy"]["destinations"]["webhooks"]
    excluded = [ipaddress.ip_network(c) for c in webhooks["except"]]
    for address in ("10.1.2.3", "172.20.0.1", "192.168.1.1", "169.254.169.254"):
        assert any(ipaddress.ip_address(address) in net for net in excluded), address


# --- ingress ----------------------------------------------------------------------------------


def routes(ingress: dict[str, Any]) -> dict[str, str]:
    """path -> the component whose Service it goes to."""
    (rule,) = ingress["spec"]["rules"]
    return {
        p["path"]: p["backend"]["service"]["name"].removeprefix("drone-delivery-")
        for p in rule["http"]["paths"]
    }


def test_ingress_serves_the_public_paths_over_tls_through_the_waf_and_hides_healthz(
    objs: list[dict[str, Any]], values: dict[str, Any]
) -> None:
    ingresses = of_kind(objs, "Ingress")
    assert {component(i) for i in ingresses} == {"web", "live"}
    services = {s["metadata"]["name"]: s for s in of_kind(objs, "Service")}
    for ingress in ingresses:
        notes = annotations_of(ingress)
        assert ingress["spec"]["ingressClassName"] == "azure-application-gateway"
        assert notes["appgw.ingress.kubernetes.io/appgw-ssl-certificate"]
        assert notes["appgw.ingress.kubernetes.io/ssl-redirect"] == "true"
        waf = notes["appgw.ingress.kubernetes.io/waf-policy-for-path"]
        assert waf.startswith("/subscriptions/")
        assert notes["appgw.ingress.kubernetes.io/health-probe-path"] == "/healthz/ready"
        assert notes["appgw.ingress.kubernetes.io/health-probe-hostname"] == values["host"]
        (rule,) = ingress["spec"]["rules"]
        assert rule["host"] == values["host"]  # one listener: AGIC merges the two path maps
        for path in rule["http"]["paths"]:
            assert path["pathType"] == "Prefix"
            assert not path["path"].startswith("/healthz")
            service = services[path["backend"]["service"]["name"]]
            # The Ingress and its Service belong to the same component, on its named port.
            assert component(service) == component(ingress)
            assert path["backend"]["service"]["port"] == {"name": "http"}
            assert [p["name"] for p in service["spec"]["ports"]] == ["http"]
    paths = {path for i in ingresses for path in routes(i)}
    assert {"/api/", "/track/", "/admin/", "/live/", "/"} <= paths


def test_live_paths_go_to_the_live_service_and_everything_else_to_web(
    objs: list[dict[str, Any]],
) -> None:
    by_name = by_component(objs, "Ingress")
    assert routes(by_name["live"]) == {"/live/": "live"}
    web_routes = routes(by_name["web"])
    assert set(web_routes.values()) == {"web"}
    assert "/" in web_routes
    assert not [p for p in web_routes if p.startswith("/live")]
    # The live Service reaches the live pods on their named port.
    service = by_component(objs, "Service")["live"]
    assert service["spec"]["selector"][COMPONENT] == "live"
    (port,) = service["spec"]["ports"]
    assert port["targetPort"] == "http"
    (container_port,) = container_of(objs, "live")["ports"]
    assert container_port["name"] == "http"


def test_only_the_live_streams_get_a_long_gateway_request_timeout(
    objs: list[dict[str, Any]], values: dict[str, Any]
) -> None:
    by_name = by_component(objs, "Ingress")
    timeout = "appgw.ingress.kubernetes.io/request-timeout"
    live = annotations_of(by_name["live"])
    # App Gateway drops a response that stays silent for longer than this: a quiet stream
    # needs more than the default 30 s.
    assert int(live[timeout]) == values["ingress"]["live"]["requestTimeoutSeconds"]
    assert int(live[timeout]) >= 60
    # web keeps App Gateway's default: a hung API request still fails fast.
    assert timeout not in annotations_of(by_name["web"])


def test_a_web_path_that_would_shadow_live_is_refused(tmp_path: Path) -> None:
    shadow = tmp_path / "shadow.yaml"
    shadow.write_text("ingress:\n  paths: [/api/, /live/deliveries/, /]\n")
    result = run_tool(
        [
            str(tool("python")),
            str(REPO / "tests" / "deploy" / "toolbox.py"),
            "render",
            str(CHART),
            "drone-delivery",
            NAMESPACE,
            str(CHART / "values.yaml"),
            str(shadow),
        ]
    )
    assert result.returncode != 0
    assert "ingress.live.path routes it to live" in result.stderr


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


def test_the_quota_holds_every_component_at_full_scale_during_a_rollout(
    rendered: dict[str, dict[str, Any]], cluster_build: dict[str, Any], env: str
) -> None:
    """Every Deployment at its maximum replicas plus one surge pod (rolling ones), and the
    migrations Job, fit the namespace's quota: deploy/cluster's in prod, the chart's in dev."""
    objs = objects(rendered, env)
    guards = of_kind(objs, "ResourceQuota")
    (quota,) = guards or of_kind(cluster_build["objects"], "ResourceQuota")
    hard = quota["spec"]["hard"]
    maximum = {
        h["spec"]["scaleTargetRef"]["name"]: h["spec"]["maxReplicas"]
        for h in of_kind(objs, "HorizontalPodAutoscaler")
    }
    maximum |= {
        s["spec"]["scaleTargetRef"]["name"]: s["spec"]["maxReplicaCount"]
        for s in of_kind(objs, "ScaledObject")
    }
    totals = dict.fromkeys(
        ("pods", "requests.cpu", "requests.memory", "limits.cpu", "limits.memory"), 0.0
    )
    for workload, pod in workloads(objs):
        pods = 1
        if workload["kind"] == "Deployment":
            pods = maximum.get(workload["metadata"]["name"], workload["spec"].get("replicas", 1))
            pods += workload["spec"]["strategy"]["type"] == "RollingUpdate"
        totals["pods"] += pods
        for container in pod["containers"]:
            for bound in ("requests", "limits"):
                for resource in ("cpu", "memory"):
                    amount = quantity(container["resources"][bound][resource])
                    totals[f"{bound}.{resource}"] += pods * amount
    for key, total in totals.items():
        assert total <= quantity(hard[key]), (key, total, hard[key])


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


def test_web_reads_client_addresses_from_the_ingress_forwarded_header(
    objs: list[dict[str, Any]],
) -> None:
    # Behind the Application Gateway every request comes from the gateway's address: without
    # this, one client's failed sign-ins would throttle everyone (portal/limits.py).
    web = by_component(objs, "Deployment")["web"]["spec"]["template"]["spec"]["containers"][0]
    assert env_of(web)["TRUSTED_PROXY_COUNT"] == "1"
