"""The probes the chart renders work against the real processes, as the kubelet would run them.

The web and live pods' rendered commands and environments start gunicorn and uvicorn from the
app's virtualenv (a subprocess: nothing of the app is imported here), with the Key Vault secrets
as files, the code on a read-only mount when the machine allows a private mount namespace (root
with `unshare`, as on CI), and the probes' own paths and Host header. The worker's, the
simulator's and beat's exec probes run as rendered against fresh and stale heartbeat / schedule
files. The simulator's request reaches the dev web pod as the simulator would send it.

Nothing leaves the machine: the service URLs point at closed loopback ports and the broker is
Celery's in-memory transport.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import REPO

APP_BIN = Path(sys.executable).parent
# What the Key Vault CSI mount would hold: harmless values with the right shapes.
SECRET_VALUES = {
    "SECRET_KEY": "deploy-check-not-a-secret-0123456789abcdefghijklmnopqrstuvwxyz",
    "REDIS_URL": "redis://127.0.0.1:9/0",
    "MONGODB_URI": "mongodb://127.0.0.1:9/",
}


def deployment(
    rendered: dict[str, dict[str, Any]], name: str, environment: str = "prod"
) -> dict[str, Any]:
    for item in rendered[environment]["objects"]:
        obj = item["object"]
        labels = obj["metadata"].get("labels", {})
        if obj["kind"] == "Deployment" and labels.get("app.kubernetes.io/component") == name:
            spec: dict[str, Any] = obj["spec"]["template"]["spec"]
            return spec
    raise AssertionError(f"no {name} Deployment")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def pod_environment(container: dict[str, Any], secrets_dir: Path, tmp: Path) -> dict[str, str]:
    """The container's env as the kubelet would give it, with /mnt/secrets and /tmp moved."""
    env = {
        "PATH": f"{APP_BIN}:/usr/bin:/bin",
        "HOME": str(tmp),  # as in the image: HOME=/tmp
        "PYTHONDONTWRITEBYTECODE": "1",
        "DJANGO_SETTINGS_MODULE": "portal.settings",
        # The image has no .local/ (Dockerfile.dockerignore); ignore a running `make run`'s.
        "FABRIKAM_IGNORE_LOCAL_SERVICES_FILE": "true",
    }
    secrets_dir.mkdir()
    for item in container["env"]:
        name, value = item["name"], item.get("value")
        if value is None:  # from the Downward API: the pod's own name, namespace, node
            env[name] = f"test-{item['valueFrom']['fieldRef']['fieldPath'].replace('.', '-')}"
            continue
        if value.startswith("/mnt/secrets/"):
            variable = name.removesuffix("_FILE")
            if variable == "APPLICATIONINSIGHTS_CONNECTION_STRING":
                continue  # no telemetry export from a test
            if variable == "DATABASE_URL":
                secret = f"sqlite:///{tmp / 'db.sqlite3'}"
            else:
                secret = SECRET_VALUES[variable]
            path = secrets_dir / Path(value).name
            path.write_text(secret + "\n")  # files from the CSI driver may end with a newline
            value = str(path)
        env[name] = value
    # Service Bus is not reachable from here; the in-memory transport stands in.
    env["CELERY_BROKER_URL"] = "memory://"
    return env


def read_only(command: list[str]) -> list[str]:
    """Wrap a command to see the repository read-only, as the image's root filesystem is."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        return command
    script = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec "$@"'
    return ["unshare", "--mount", "sh", "-c", script, str(REPO), *command]


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # report the redirect; never follow it off the machine


# Straight to loopback: no proxy from the environment, no redirect followed.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())


def get(url: str, headers: dict[str, str]) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers)  # noqa: S310 - loopback only
    try:
        with _opener.open(request, timeout=10) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as error:
        return int(error.code), error.read()


@contextlib.contextmanager
def serve(
    container: dict[str, Any], tmp_path: Path, listen: str, port_argument: str | None
) -> Iterator[str]:
    """Start a pod's HTTP server from its rendered command on a free loopback port; yields its
    base URL. `listen` is the rendered bind address (gunicorn's host:port, uvicorn's --host);
    `port_argument` the rendered --port value when the port is a separate argument."""
    env = pod_environment(container, tmp_path / "secrets", tmp_path)
    port = free_port()
    rewrites = {"/tmp": str(tmp_path)}
    if port_argument is None:
        rewrites[listen] = f"127.0.0.1:{port}"
    else:
        rewrites |= {listen: "127.0.0.1", port_argument: str(port)}
    command = []
    for arg in container["command"]:
        # The kubelet expands $(VAR) from the container's env.
        arg = re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], arg)
        command.append(rewrites.get(arg, arg))
    command[0] = str(APP_BIN / command[0])
    log_path = tmp_path / "server.log"
    log = log_path.open("w")
    process = subprocess.Popen(
        read_only(command), cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    log.flush()
                    pytest.fail(f"{command[0]} did not start:\n{log_path.read_text()}")
                time.sleep(0.2)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@pytest.fixture
def web(
    rendered: dict[str, dict[str, Any]], tmp_path: Path
) -> Iterator[tuple[str, dict[str, Any]]]:
    """The prod web container started from its rendered command; yields (base URL, container)."""
    container = deployment(rendered, "web")["containers"][0]
    with serve(container, tmp_path, "0.0.0.0:8000", None) as base:
        yield base, container


def test_web_answers_its_probes_with_the_rendered_command_env_and_host(
    web: tuple[str, dict[str, Any]],
) -> None:
    base, container = web
    for probe in ("startupProbe", "livenessProbe"):
        spec = container[probe]["httpGet"]
        headers = {h["name"]: h["value"] for h in spec["httpHeaders"]}
        status, _ = get(base + spec["path"], headers)
        assert status == 200, probe
    spec = container["readinessProbe"]["httpGet"]
    headers = {h["name"]: h["value"] for h in spec["httpHeaders"]}
    status, body = get(base + spec["path"], headers)
    # Redis and MongoDB are closed ports here: not ready for Redis (no API key is checked
    # without it), while MongoDB is not asked (the workflow retries it; requests are stored).
    assert status == 503
    assert json.loads(body)["failed"] == ["redis"]
    assert "mongodb" not in json.loads(body)["checks"]
    # The operators' report names every dependency that is down.
    status, body = get(base + "/healthz/dependencies", headers)
    assert status == 503
    assert {"redis", "mongodb"} <= set(json.loads(body)["failed"])
    # Through the ingress (a proxy's headers), however the path is spelt: not found.
    for path in (spec["path"], "/healthz/dependencies", "/%68ealthz/ready", "/healthz/liv%65"):
        assert get(base + path, {**headers, "X-Forwarded-For": "203.0.113.9"})[0] == 404, path
    # Without the probe's Host header Django refuses the request: that is why it is set.
    assert get(base + spec["path"], {})[0] == 400
    # The health paths are not redirected to HTTPS; everything else is (TLS ends at the gateway).
    redirected, _ = get(base + "/", headers)
    assert redirected in {301, 302}


def probe_headers(spec: dict[str, Any]) -> dict[str, str]:
    return {h["name"]: h["value"] for h in spec["httpHeaders"]}


@pytest.fixture
def live(
    rendered: dict[str, dict[str, Any]], tmp_path: Path
) -> Iterator[tuple[str, dict[str, Any]]]:
    """The prod live container (uvicorn) from its rendered command; yields (base URL, container)."""
    container = deployment(rendered, "live")["containers"][0]
    command = container["command"]
    port = command[command.index("--port") + 1]
    host = command[command.index("--host") + 1]
    with serve(container, tmp_path, host, port) as base:
        yield base, container


def test_live_answers_its_probes_with_the_rendered_command_env_and_host(
    live: tuple[str, dict[str, Any]],
) -> None:
    base, container = live
    for probe in ("startupProbe", "livenessProbe"):
        spec = container[probe]["httpGet"]
        status, _ = get(base + spec["path"], probe_headers(spec))
        assert status == 200, probe
    spec = container["readinessProbe"]["httpGet"]
    status, body = get(base + spec["path"], probe_headers(spec))
    # Redis is a closed port here: not ready, and the answer says so.
    assert status == 503
    assert "redis" in json.loads(body)["failed"]
    assert get(base + spec["path"], {})[0] == 400


def test_live_readiness_checks_only_what_the_chart_asks_for(
    live: tuple[str, dict[str, Any]],
) -> None:
    base, container = live
    spec = container["readinessProbe"]["httpGet"]
    _, body = get(base + spec["path"], probe_headers(spec))
    wanted = {e["name"]: e.get("value") for e in container["env"]}["HEALTHCHECK_READY_CHECKS"]
    assert set(json.loads(body)["checks"]) == set(wanted.split(","))


def test_web_accepts_the_simulator_s_telemetry_over_plain_http_by_the_service_name(
    rendered: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    """The dev web pod, as the simulator reaches it: plain HTTP to the web Service's name."""
    container = deployment(rendered, "web", "dev")["containers"][0]
    simulator = deployment(rendered, "simulator", "dev")["containers"][0]
    url = {e["name"]: e.get("value") for e in simulator["env"]}["FLEET_SIM_API_URL"]
    host = url.removeprefix("http://").split(":")[0]
    with serve(container, tmp_path, "0.0.0.0:8000", None) as base:
        request = urllib.request.Request(  # noqa: S310 - loopback only
            base + "/api/v1/telemetry",
            data=b'{"reports": []}',
            headers={"Host": host, "Content-Type": "application/json"},
            method="POST",
        )
        try:
            with _opener.open(request, timeout=10) as response:
                status = int(response.status)
        except urllib.error.HTTPError as error:
            status = int(error.code)
        # Neither refused for its Host (400) nor redirected to HTTPS (301): it reached the API,
        # which asks for a telemetry key.
        assert status == 401
        # Any other path still goes to HTTPS, whatever the Host.
        assert get(base + "/", {"Host": host})[0] in {301, 302}


def test_the_simulator_probe_passes_on_a_fresh_heartbeat_and_fails_on_a_stale_or_missing_one(
    rendered: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    container = deployment(rendered, "simulator", "dev")["containers"][0]
    heartbeat = tmp_path / "simulator-heartbeat"
    env = {"PATH": f"{APP_BIN}:/usr/bin:/bin"}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        command = container[probe]["exec"]["command"]
        # The file the simulator writes (SIMULATOR_HEARTBEAT_FILE), moved off the real /tmp.
        command = [str(heartbeat) if a == "/tmp/simulator-heartbeat" else a for a in command]
        assert str(heartbeat) in command
        heartbeat.unlink(missing_ok=True)
        assert run_probe(command, env) == 1, probe
        heartbeat.touch()
        assert run_probe(command, env) == 0, probe
        stale = time.time() - 45
        os.utime(heartbeat, (stale, stale))
        assert run_probe(command, env) == 1, probe


def run_probe(command: list[str], env: dict[str, str]) -> int:
    command = [str(APP_BIN / "python"), *command[1:]] if command[0] == "python" else command
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, timeout=30)
    return result.returncode


def test_the_worker_probe_passes_on_a_fresh_heartbeat_and_fails_on_a_stale_or_missing_one(
    rendered: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    container = deployment(rendered, "worker")["containers"][0]
    command = container["livenessProbe"]["exec"]["command"]
    heartbeat = tmp_path / "worker-heartbeat"
    env = {"PATH": f"{APP_BIN}:/usr/bin:/bin", "WORKER_HEARTBEAT_FILE": str(heartbeat)}
    assert run_probe(command, env) == 1
    heartbeat.touch()
    assert run_probe(command, env) == 0
    stale = time.time() - 120
    os.utime(heartbeat, (stale, stale))
    assert run_probe(command, env) == 1


def test_the_beat_probe_passes_on_a_fresh_schedule_and_fails_on_a_stale_or_missing_one(
    rendered: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    container = deployment(rendered, "beat")["containers"][0]
    shell, flag, script = container["livenessProbe"]["exec"]["command"]
    script = script.replace("find /tmp ", f"find {tmp_path} ")
    env = {"PATH": "/usr/bin:/bin"}
    assert run_probe([shell, flag, script], env) == 1
    # dbm.dumb, the backend of a Python without gdbm, writes these three.
    files = [tmp_path / f"celerybeat-schedule.{suffix}" for suffix in ("dat", "dir", "bak")]
    for path in files:
        path.touch()
    assert run_probe([shell, flag, script], env) == 0
    stale = time.time() - 11 * 60
    for path in files:
        os.utime(path, (stale, stale))
    assert run_probe([shell, flag, script], env) == 1
