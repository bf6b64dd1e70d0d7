"""Production refuses to start half-configured, and is clean under `check --deploy`."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.support import BASE_DIR, PYTHON

PRODUCTION = {
    "DEBUG": "false",
    "SECRET_KEY": "x" * 64 + "-a-long-random-production-like-secret",
    "ALLOWED_HOSTS": "drones.example.com",
    "DATABASE_URL": "postgres://fabrikam@db.example.com:5432/fabrikam",
    "REDIS_URL": "rediss://cache.example.com:6380/0",
    "MONGODB_URI": "mongodb://packages.example.com:10255/?tls=true",
    "CELERY_BROKER_URL": "azureservicebus://DefaultAzureCredential@bus.servicebus.windows.net",
    "PUBLIC_BASE_URL": "https://drones.example.com",
}


def manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in PRODUCTION and not k.endswith("_URL")}
    for name in ("MONGODB_URI", "SECURE_SSL_REDIRECT", "DEBUG"):
        clean.pop(name, None)
    clean["FABRIKAM_IGNORE_LOCAL_SERVICES_FILE"] = "true"
    return subprocess.run(
        [PYTHON, "manage.py", *args],
        cwd=BASE_DIR,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_production_without_secret_key_refuses_to_start_naming_it() -> None:
    env = {k: v for k, v in PRODUCTION.items() if k != "SECRET_KEY"}
    result = manage("check", env=env)
    assert result.returncode != 0
    assert "SECRET_KEY is not set" in result.stderr


def test_production_without_allowed_hosts_refuses_to_start_naming_it() -> None:
    env = {k: v for k, v in PRODUCTION.items() if k != "ALLOWED_HOSTS"}
    result = manage("check", env=env)
    assert result.returncode != 0
    assert "ALLOWED_HOSTS is not set" in result.stderr


def test_production_without_a_service_url_refuses_to_start_naming_it() -> None:
    env = {k: v for k, v in PRODUCTION.items() if k != "MONGODB_URI"}
    result = manage("check", env=env)
    assert result.returncode != 0
    assert "MONGODB_URI is not set" in result.stderr


def test_production_without_a_public_base_url_refuses_to_start_naming_it() -> None:
    # Links in answers and emails would otherwise point at a developer's loopback address.
    env = {k: v for k, v in PRODUCTION.items() if k != "PUBLIC_BASE_URL"}
    result = manage("check", env=env)
    assert result.returncode != 0
    assert "PUBLIC_BASE_URL is not set" in result.stderr


def test_the_public_base_url_is_read_without_its_trailing_slash() -> None:
    result = manage(
        "shell",
        "-c",
        "from django.conf import settings; print(settings.PUBLIC_BASE_URL)",
        env={**PRODUCTION, "PUBLIC_BASE_URL": "https://drones.example.com/"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "https://drones.example.com"


def test_check_deploy_reports_nothing_for_a_production_configuration() -> None:
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=PRODUCTION)
    assert result.returncode == 0, result.stderr
    assert "System check identified no issues" in result.stdout


def test_secrets_are_read_from_files_as_key_vault_mounts_them(tmp_path: Path) -> None:
    secret = tmp_path / "secret-key"
    secret.write_text("from-a-file-" + "k" * 60 + "\n")
    env = {k: v for k, v in PRODUCTION.items() if k != "SECRET_KEY"}
    env["SECRET_KEY_FILE"] = str(secret)
    result = manage(
        "shell", "-c", "from django.conf import settings; print(settings.SECRET_KEY)", env=env
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("from-a-file-" + "k" * 60)


def test_a_boolean_setting_refuses_anything_but_true_or_false() -> None:
    result = manage("check", env={**PRODUCTION, "EMAIL_USE_TLS": "maybe"})
    assert result.returncode != 0
    assert "EMAIL_USE_TLS must be true or false" in result.stderr


def database_options(**env: str) -> str:
    result = manage(
        "shell",
        "-c",
        "from django.conf import settings; "
        "print(sorted(settings.DATABASES['default']['OPTIONS'].items()))",
        env={**PRODUCTION, **env},
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_postgresql_statements_are_prepared_unless_turned_off_for_pgbouncer() -> None:
    prepared = database_options()
    assert "('prepare_threshold', 5)" in prepared and "('server_side_binding', True)" in prepared
    plain = database_options(DATABASE_PREPARE_THRESHOLD="0")
    assert "prepare_threshold" not in plain and "server_side_binding" not in plain


def setting(name: str, **env: str) -> str:
    result = manage(
        "shell", "-c", f"from django.conf import settings; print(settings.{name})", env=env
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]  # after the shell's own line, if any


def test_development_writes_emails_to_files_production_without_a_mail_server_logs_them() -> None:
    assert setting("EMAIL_BACKEND", DEBUG="true") == "portal.mail.FolderBackend"
    assert setting("EMAIL_FILE_PATH", DEBUG="true") == str(BASE_DIR / ".local" / "mail")
    assert setting("EMAIL_BACKEND", DEBUG="true", EMAIL_HOST="smtp.example.com") == (
        "django.core.mail.backends.smtp.EmailBackend"
    )
    assert (
        setting("EMAIL_BACKEND", **PRODUCTION) == "django.core.mail.backends.console.EmailBackend"
    )


def test_task_lines_are_off_unless_asked_for_and_a_wrong_level_is_named() -> None:
    for logger in ("celery.app.trace", "celery.worker.strategy", "celery.beat"):
        level = f"LOGGING['loggers']['{logger}']['level']"
        assert setting(level, DEBUG="true") == "WARNING"
        assert setting(level, DEBUG="true", TASK_LOG_LEVEL="info") == "INFO"
    result = manage("check", env={**PRODUCTION, "TASK_LOG_LEVEL": "loud"})
    assert result.returncode != 0
    assert "TASK_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, not 'LOUD'" in result.stderr
