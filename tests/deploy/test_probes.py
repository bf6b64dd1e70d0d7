"""The probes the chart renders work against the real processes, as the kubelet would run them.

The web pod's rendered command and environment start gunicorn from the app's virtualenv (a
subprocess: nothing of the app is imported here), with the Key Vault secrets as files, the code
on a read-only mount when the machine allows a private mount namespace (root with `unshare`, as
on CI), and the probes' own paths and Host header. The worker's and beat's exec probes run as
rendered against fresh and stale heartbeat / schedule files.

Nothing leaves the machine: the service URLs point at closed loopback ports and the broker is
Celery's in-memory transport.
"""

from __future__ import annotations

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


def deployment(rendered: dict[str, dict[str, Any]], name: str) -> dict[str, Any]:
    for item in rendered["prod"]["objects"]:
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
        name, value = item["name"], item["value"]
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


@pytest.fixture
def web(
    rendered: dict[str, dict[str, Any]], tmp_path: Path
) -> Iterator[tuple[str, dict[str, Any]]]:
    """The web container started from its rendered command; yields (base URL, container)."""
    container = deployment(rendered, "web")["containers"][0]
    env = pod_environment(container, tmp_path / "secrets", tmp_path)
    port = free_port()
    command = []
    for arg in container["command"]:
        # The kubelet expands $(VAR) from the container's env.
        arg = re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], arg)
        arg = {"0.0.0.0:8000": f"127.0.0.1:{port}", "/tmp": str(tmp_path)}.get(arg, arg)
        command.append(arg)
    command[0] = str(APP_BIN / command[0])
    log = (tmp_path / "web.log").open("w")
    process = subprocess.Popen(
        read_only(command), cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    log.flush()
                    pytest.fail(f"web did not start:\n{(tmp_path / 'web.log').read_text()}")
                time.sleep(0.2)
        yield base, container
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


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
    # Redis and MongoDB are closed ports here: not ready, and the answer names them.
    assert status == 503
    assert {"redis", "mongodb"} <= set(json.loads(body)["failed"])
    # Without the probe's Host header Django refuses the request: that is why it is set.
    assert get(base + spec["path"], {})[0] == 400
    # The health paths are not redirected to HTTPS; everything else is (TLS ends at the gateway).
    redirected, _ = get(base + "/", headers)
    assert redirected in {301, 302}


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
