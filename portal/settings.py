"""Settings for every process (web, worker, beat, simulator), read from the environment.

Development defaults are safe only because, with DEBUG off, the process refuses to start
without the secret key, the allowed hosts and the URLs of every backing service.
"""

from __future__ import annotations

import importlib.util
import os
from decimal import Decimal
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

# The URLs of the Redis and MongoDB servers that `make run` started, so that
# `manage.py <command>` in another terminal talks to the same ones.
LOCAL_SERVICES_FILE = BASE_DIR / ".local" / "services.env"


def _read_local_services() -> dict[str, str]:
    if os.environ.get("FABRIKAM_IGNORE_LOCAL_SERVICES_FILE", "").lower() == "true":
        return {}
    try:
        text = LOCAL_SERVICES_FILE.read_text()
    except FileNotFoundError:
        return {}
    pairs = (line.split("=", 1) for line in text.splitlines() if "=" in line)
    return {key.strip(): value.strip() for key, value in pairs}


_LOCAL = _read_local_services()


def envstr(name: str, default: str | None = None) -> str | None:
    """The variable, else the file named by `NAME_FILE` (Key Vault secrets), else the default."""
    value = os.environ.get(name)
    if value is not None:
        return value
    path = os.environ.get(f"{name}_FILE")
    if path:
        try:
            return Path(path).read_text().strip()
        except OSError as exc:
            raise ImproperlyConfigured(f"{name}_FILE={path} cannot be read: {exc}") from exc
    return _LOCAL.get(name, default)


def envbool(name: str, default: bool) -> bool:
    value = envstr(name)
    if value is None or value == "":
        return default
    if value.lower() in ("true", "1", "yes", "on"):
        return True
    if value.lower() in ("false", "0", "no", "off"):
        return False
    raise ImproperlyConfigured(f"{name} must be true or false, not {value!r}")


def envint(name: str, default: int) -> int:
    value = envstr(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a whole number, not {value!r}") from None


def envlist(name: str, default: str = "") -> list[str]:
    value = envstr(name, default) or ""
    return [item.strip() for item in value.split(",") if item.strip()]


DEBUG = envbool("DEBUG", False)


def required(name: str, development_default: str) -> str:
    """A setting production must give; development falls back to a local default."""
    value = envstr(name)
    if value:
        return value
    if not DEBUG:
        raise ImproperlyConfigured(
            f"{name} is not set. It is required when DEBUG is off "
            f"(set DEBUG=true for local development)."
        )
    return development_default


SECRET_KEY = required("SECRET_KEY", "django-insecure-development-only-key-do-not-use-in-production")
ALLOWED_HOSTS = envlist("ALLOWED_HOSTS") or (
    ["localhost", "127.0.0.1", "[::1]", "testserver"] if DEBUG else []
)
if not ALLOWED_HOSTS:
    raise ImproperlyConfigured(
        "ALLOWED_HOSTS is not set. It is required when DEBUG is off "
        "(a comma-separated list of host names)."
    )
CSRF_TRUSTED_ORIGINS = envlist("CSRF_TRUSTED_ORIGINS")

DATABASE_URL = required("DATABASE_URL", f"sqlite:///{BASE_DIR / '.local' / 'db.sqlite3'}")
REDIS_URL = required("REDIS_URL", "redis://127.0.0.1:6379/0")
MONGODB_URI = required("MONGODB_URI", "mongodb://127.0.0.1:27017/")
MONGODB_DATABASE = envstr("MONGODB_DATABASE", "fabrikam") or "fabrikam"
MONGODB_TIMEOUT_MS = envint("MONGODB_TIMEOUT_MS", 5000)
CELERY_BROKER_URL = required("CELERY_BROKER_URL", REDIS_URL)
APPLICATIONINSIGHTS_CONNECTION_STRING = envstr("APPLICATIONINSIGHTS_CONNECTION_STRING")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework_api_key",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "portal",
    "businesses",
    "drones",
    "deliveries",
    "packages",
    "airspace",
    "webhooks",
    "notifications",
    "workers",
    "audit",
]

MIDDLEWARE = [
    # Outermost: the access log's latency covers every other middleware; /metrics is answered
    # before the host check and the HTTPS redirect (scrapers reach pods by IP, over HTTP).
    "portal.logs.AccessLogMiddleware",
    "portal.metrics.MetricsEndpointMiddleware",
    # A body over DATA_UPLOAD_MAX_MEMORY_SIZE: 413, read to its end first (portal/limits.py).
    "portal.limits.RequestBodyLimitMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    "portal.middleware.SiteTimeZoneMiddleware",
]

ROOT_URLCONF = "portal.urls"
WSGI_APPLICATION = "portal.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        DATABASE_URL, conn_max_age=envint("DATABASE_CONN_MAX_AGE", 60), conn_health_checks=True
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Django's, with a cheaper query log (DEBUG): portal/sqlite/base.py.
    DATABASES["default"]["ENGINE"] = "portal.sqlite"
    # A file, not memory, so that worker processes started by tests see the test database;
    # WAL and a busy timeout let the web process and workers write side by side.
    DATABASES["default"]["TEST"] = {"NAME": str(BASE_DIR / ".local" / "test-db.sqlite3")}
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 20,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    # Connections persist (DATABASE_CONN_MAX_AGE) as on PostgreSQL: opening one (the WAL
    # pragmas, reading the schema) costs about as much as a whole `POST /api/v1/deliveries`.
    Path(DATABASES["default"]["NAME"]).parent.mkdir(parents=True, exist_ok=True)
else:
    DATABASES["default"]["OPTIONS"] = {"connect_timeout": 5}
    # psycopg binds parameters on the server and prepares a statement once a connection has
    # run it this many times: PostgreSQL then skips parsing and planning it, half the database
    # time of the delivery workflow (its drone search is one large query). 0 turns it off, for
    # a transaction-mode PgBouncer without max_prepared_statements.
    DATABASE_PREPARE_THRESHOLD = envint("DATABASE_PREPARE_THRESHOLD", 5)
    if DATABASE_PREPARE_THRESHOLD > 0:
        DATABASES["default"]["OPTIONS"].update(
            server_side_binding=True, prepare_threshold=DATABASE_PREPARE_THRESHOLD
        )

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

CACHES = {
    "default": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": REDIS_URL,
        "OPTIONS": {
            "SOCKET_CONNECT_TIMEOUT": 2,
            "SOCKET_TIMEOUT": 2,
        },
    }
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}

# The site: customers sign up and in with their email address; business members with theirs.
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "site-deliveries"
LOGOUT_REDIRECT_URL = "home"
PASSWORD_RESET_TIMEOUT = 3 * 3600
# The deliveries customers schedule on the site belong to this account of the platform's own.
CUSTOMERS_BUSINESS_NAME = envstr("CUSTOMERS_BUSINESS_NAME", "Fabrikam customers") or ""
# The site shows and reads times in the service area's zone (the API speaks ISO with a zone).
SITE_TIME_ZONE = envstr("SITE_TIME_ZONE", "America/Los_Angeles") or "UTC"
# Where the site's maps open: the service area's centre, "lat,lon".
SITE_MAP_CENTER = [float(v) for v in (envstr("SITE_MAP_CENTER") or "47.6062,-122.3321").split(",")]
# Map tiles come from OpenStreetMap when the browser reaches it; the pages work without them.
MAP_TILE_URL = envstr("MAP_TILE_URL", "https://tile.openstreetmap.org/{z}/{x}/{y}.png") or ""
MAP_TILE_ATTRIBUTION = envstr(
    "MAP_TILE_ATTRIBUTION",
    '&copy; <a href="https://www.openstreetmap.org/copyright">OpenStreetMap</a> contributors',
)


def _origin(url: str) -> str:
    """scheme://host[:port] of a URL ('' for none)."""
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.split('/', 1)[0]}" if rest else ""


# Content Security Policy (django-csp): scripts only from our own static files, never inline.
# Inline style attributes stay allowed for Django admin's templates; our pages use none.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'", "'unsafe-inline'"],
        "img-src": ["'self'", "data:", *filter(None, [_origin(MAP_TILE_URL.replace("{s}", "a"))])],
        "connect-src": ["'self'", *filter(None, [_origin(envstr("LIVE_BASE_URL") or "")])],
        "font-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
}

# Email: the console locally, SMTP when a host is given.
EMAIL_HOST = envstr("EMAIL_HOST", "") or ""
EMAIL_PORT = envint("EMAIL_PORT", 587)
EMAIL_HOST_USER = envstr("EMAIL_HOST_USER", "") or ""
EMAIL_HOST_PASSWORD = envstr("EMAIL_HOST_PASSWORD", "") or ""
EMAIL_USE_TLS = envbool("EMAIL_USE_TLS", True)
EMAIL_TIMEOUT = 10
# With no mail server: in development each email is written to a file under EMAIL_FILE_PATH,
# with one log line naming it (portal/mail.py); otherwise printed whole to the log.
EMAIL_BACKEND = envstr(
    "EMAIL_BACKEND",
    "django.core.mail.backends.smtp.EmailBackend"
    if EMAIL_HOST
    else "portal.mail.FolderBackend"
    if DEBUG
    else "django.core.mail.backends.console.EmailBackend",
)
EMAIL_FILE_PATH = envstr("EMAIL_FILE_PATH", str(BASE_DIR / ".local" / "mail"))
DEFAULT_FROM_EMAIL = envstr("DEFAULT_FROM_EMAIL", "Fabrikam Drone Delivery <noreply@localhost>")

# Security. TLS ends at the Application Gateway, which says so in X-Forwarded-Proto;
# probes reach pods over plain HTTP and must not be redirected.
# SECURE_PROXY_SSL_HEADER: "Header-Name: value" the ingress sets on HTTPS requests (it must
# also strip a client's own); empty when nothing in front says so.
_proxy_ssl = (envstr("SECURE_PROXY_SSL_HEADER", "X-Forwarded-Proto: https") or "").partition(":")
SECURE_PROXY_SSL_HEADER = (
    ("HTTP_" + _proxy_ssl[0].strip().upper().replace("-", "_"), _proxy_ssl[2].strip())
    if _proxy_ssl[0].strip()
    else None
)
SECURE_SSL_REDIRECT = envbool("SECURE_SSL_REDIRECT", not DEBUG)
# Drones' gateways inside the cluster (the fleet simulator) post telemetry to the web Service
# over plain HTTP; from outside it arrives through the TLS ingress like everything else.
SECURE_REDIRECT_EXEMPT = [r"^healthz/", r"^api/v1/telemetry$"]
SECURE_HSTS_SECONDS = envint("SECURE_HSTS_SECONDS", 0 if DEBUG else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = envbool("SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
SECURE_HSTS_PRELOAD = envbool("SECURE_HSTS_PRELOAD", False)
SESSION_COOKIE_SECURE = not DEBUG
CSRF_COOKIE_SECURE = not DEBUG
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
SECURE_REFERRER_POLICY = envstr("SECURE_REFERRER_POLICY") or "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
SILENCED_SYSTEM_CHECKS = [
    # HSTS preload is a commitment of the whole domain; it is opt-in (SECURE_HSTS_PRELOAD).
    "security.W021",
]

# Celery. The same code runs on Service Bus, Redis or RabbitMQ by the broker URL alone.
# A request waits at most this long for the broker; past it the message waits in the outbox for
# the relay (portal/broker.py), and the client has its 202 all the same.
BROKER_PUBLISH_TIMEOUT_MS = envint("BROKER_PUBLISH_TIMEOUT_MS", 250)
# Every transport's own connect and socket (read, write) timeouts, in seconds: they end a publish
# or a consumer's call that a broker, up but not answering, would hold forever.
BROKER_CONNECT_TIMEOUT_SECONDS = float(envstr("BROKER_CONNECT_TIMEOUT_SECONDS") or 3)
BROKER_SOCKET_TIMEOUT_SECONDS = float(envstr("BROKER_SOCKET_TIMEOUT_SECONDS") or 5)
# Service Bus locks a received message this long (the queue's LockDuration; kombu creates the
# queue with it when it does not exist). Locks are renewed while a worker holds a message, and
# no task waits on a countdown longer than BROKER_MAX_COUNTDOWN_SECONDS (longer waits are taken
# in hops), so a message is never delivered again while its first copy still waits or runs.
SERVICEBUS_LOCK_SECONDS = envint("SERVICEBUS_LOCK_SECONDS", 60)
BROKER_MAX_COUNTDOWN_SECONDS = envint(
    "BROKER_MAX_COUNTDOWN_SECONDS", SERVICEBUS_LOCK_SECONDS * 3 // 4
)
if not 1 <= BROKER_MAX_COUNTDOWN_SECONDS < SERVICEBUS_LOCK_SECONDS:
    raise ImproperlyConfigured(
        f"BROKER_MAX_COUNTDOWN_SECONDS must be from 1 to less than SERVICEBUS_LOCK_SECONDS "
        f"({SERVICEBUS_LOCK_SECONDS}), not {BROKER_MAX_COUNTDOWN_SECONDS}"
    )
CELERY_BROKER_CONNECTION_TIMEOUT = BROKER_CONNECT_TIMEOUT_SECONDS
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Without this Celery's Django fixup closes the database connection before and after every
# task, and reconnecting costs more than a workflow step's queries. Workers then keep their
# connections as web processes do: portal/celery.py applies DATABASE_CONN_MAX_AGE and the
# health checks around each task, as Django does around each request.
CELERY_DB_REUSE_MAX = 10_000
CELERY_TASK_IGNORE_RESULT = True
CELERY_TIMEZONE = "UTC"
CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, object] = {
    # A publish that finds the broker down gives up within a second instead of kombu's default
    # ~6 s of retries: the message waits in the outbox for the relay, the client gets its 202
    # promptly. (Workers reconnect their consumers by their own, patient, policy.)
    "max_retries": 1,
    "interval_start": 0,
    "interval_step": 0.2,
    "interval_max": 0.5,
}
if CELERY_BROKER_URL.startswith("redis://"):
    # kombu's Redis transport, with one client per channel rather than one per message.
    CELERY_BROKER_TRANSPORT = "portal.broker:RedisTransport"
if CELERY_BROKER_URL.startswith(("redis", "rediss")):
    CELERY_BROKER_TRANSPORT_OPTIONS.update(
        {
            # A message not acknowledged within this time (its worker died) goes to another
            # worker; it must exceed the longest task and the longest retry countdown (60 s).
            "visibility_timeout": envint("CELERY_VISIBILITY_TIMEOUT", 300),
            # How often workers look for such messages (kombu's default is every ~100 s).
            "unacked_restore_interval": envint("CELERY_UNACKED_RESTORE_INTERVAL", 10),
            "unacked_restore_throttle": 1,
            # Without these a publish waits forever on a broker that vanished without closing
            # the connection, and an accepted request would hang instead of going to the outbox.
            "socket_timeout": BROKER_SOCKET_TIMEOUT_SECONDS,
            "socket_connect_timeout": BROKER_CONNECT_TIMEOUT_SECONDS,
        }
    )
elif CELERY_BROKER_URL.startswith(("amqp", "pyamqp")):
    # py-amqp: connect_timeout is CELERY_BROKER_CONNECTION_TIMEOUT; these bound every read and
    # write on the socket (the handshake, a publish), which otherwise have none.
    CELERY_BROKER_TRANSPORT_OPTIONS.update(
        {
            "read_timeout": BROKER_SOCKET_TIMEOUT_SECONDS,
            "write_timeout": BROKER_SOCKET_TIMEOUT_SECONDS,
        }
    )
elif CELERY_BROKER_URL.startswith("azureservicebus"):
    CELERY_BROKER_TRANSPORT_OPTIONS.update(
        {
            "peek_lock_seconds": SERVICEBUS_LOCK_SECONDS,
            # The SDK's AutoLockRenewer keeps a held message's lock (a countdown, a long task)
            # until it is settled, for up to an hour.
            "use_lock_renewal": True,
            "max_lock_renewal_duration": 3600,
            # The SDK retries an operation 3 times with up to 120 s of backoff by default: a
            # worker's publish or settle would hang that long. (A request never waits past
            # BROKER_PUBLISH_TIMEOUT_MS whatever the SDK does.)
            "retry_total": 2,
            "retry_backoff_factor": 0.5,
            "retry_backoff_max": BROKER_SOCKET_TIMEOUT_SECONDS,
        }
    )
WORKER_HEARTBEAT_FILE = envstr("WORKER_HEARTBEAT_FILE") or "/tmp/worker-heartbeat"  # nosec B108 # the container's own emptyDir

API_RATE_LIMIT = envstr("API_RATE_LIMIT", "100/second") or "100/second"
# Failed authentications (API and telemetry keys) allowed per client address; past it every
# authenticated request from the address is 429 until the window ends (portal/limits.py).
AUTH_FAILURE_RATE_LIMIT = envstr("AUTH_FAILURE_RATE_LIMIT") or "30/minute"
# Failed sign-ins (the site's /login and admin's) allowed per client address and per user name.
LOGIN_FAILURE_RATE_LIMIT = envstr("LOGIN_FAILURE_RATE_LIMIT") or "10/15minutes"
# Password reset requests (each may send an email) allowed per client address, and per email
# address asked for, whoever asks. Past the first, 429 with the form; past the second nothing
# more is sent to that address, and the page says "sent" as it does for an unknown address.
PASSWORD_RESET_RATE_LIMIT = envstr("PASSWORD_RESET_RATE_LIMIT") or "5/hour"
PASSWORD_RESET_EMAIL_RATE_LIMIT = envstr("PASSWORD_RESET_EMAIL_RATE_LIMIT") or "3/hour"
# How many reverse proxies in front of the web process append to X-Forwarded-For (1 on AKS: the
# Application Gateway). 0: the client's address is REMOTE_ADDR and X-Forwarded-For is ignored.
TRUSTED_PROXY_COUNT = envint("TRUSTED_PROXY_COUNT", 0)
# Per business: deliveries not yet finished, and deliveries waiting for a later pickup. Past
# either a new one is 429 (0: no limit). The customers' business on the site counts per
# customer instead (CUSTOMER_MAX_*): it serves every customer of the site.
BUSINESS_MAX_ACTIVE_DELIVERIES = envint("BUSINESS_MAX_ACTIVE_DELIVERIES", 100)
BUSINESS_MAX_SCHEDULED_DELIVERIES = envint("BUSINESS_MAX_SCHEDULED_DELIVERIES", 500)
CUSTOMER_MAX_ACTIVE_DELIVERIES = envint("CUSTOMER_MAX_ACTIVE_DELIVERIES", 5)
CUSTOMER_MAX_SCHEDULED_DELIVERIES = envint("CUSTOMER_MAX_SCHEDULED_DELIVERIES", 10)

HEALTHCHECK_TIMEOUT_SECONDS = float(envstr("HEALTHCHECK_TIMEOUT_SECONDS", "2") or 2)
# Which dependencies /healthz/ready checks in this process (comma-separated; default database
# and redis, what a request cannot be stored without; portal/health.py). /healthz/dependencies
# always checks all four: database, redis, mongodb, broker.
HEALTHCHECK_READY_CHECKS = envlist("HEALTHCHECK_READY_CHECKS")
_unknown_checks = set(HEALTHCHECK_READY_CHECKS) - {"database", "redis", "mongodb", "broker"}
if _unknown_checks:
    raise ImproperlyConfigured(
        f"HEALTHCHECK_READY_CHECKS names unknown checks: {', '.join(sorted(_unknown_checks))}; "
        "choose from database, redis, mongodb, broker"
    )

REST_FRAMEWORK: dict[str, object] = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["businesses.auth.ApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_THROTTLE_CLASSES": ["businesses.auth.ApiKeyRateThrottle"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["portal.api.JsonParser"],
    "DEFAULT_PAGINATION_CLASS": "portal.api.Pagination",
    "PAGE_SIZE": 50,
    "EXCEPTION_HANDLER": "portal.api.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "portal.schema.ApiSchema",
    "UNAUTHENTICATED_USER": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Fabrikam Drone Delivery API",
    "DESCRIPTION": (
        "Schedule drone pickups, follow them live, cancel or reschedule them. Authenticate with "
        "`Authorization: Api-Key <key>`. Coordinates are WGS84 decimal degrees; times are ISO 8601 "
        "with a zone."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SERVE_AUTHENTICATION": [],
    # Input and output components apart, so that inputs carry their own rules (minLength: 1 for
    # a required string) and schemathesis generates what the API accepts.
    "COMPONENT_SPLIT_REQUEST": True,
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        # Links from a created delivery or webhook endpoint to the operations on it.
        "portal.schema.add_links",
    ],
}

# Live feeds (server-sent events) come from the ASGI `live` process under /live/. On AKS the
# ingress routes /live/ to it on the site's own origin; where it listens elsewhere (`make run`:
# the next port) the tracking page is told its base URL, and the feed allows that page's origin.
LIVE_BASE_URL = (envstr("LIVE_BASE_URL") or "").rstrip("/")
LIVE_ALLOW_ORIGIN = envstr("LIVE_ALLOW_ORIGIN") or ""

# Deliveries: pricing, limits and the workflow's patience.
# The address the site is really served at: the base of every link in answers, pages and emails.
# `make run` sets it to the port it serves on; the Helm chart to https://<host>.
PUBLIC_BASE_URL = required("PUBLIC_BASE_URL", "http://127.0.0.1:8000").rstrip("/")
PRICE_CURRENCY = envstr("PRICE_CURRENCY") or "USD"
PRICE_BASE = Decimal(envstr("PRICE_BASE") or "4.00")
PRICE_PER_KM = Decimal(envstr("PRICE_PER_KM") or "1.20")
PRICE_PER_KG = Decimal(envstr("PRICE_PER_KG") or "0.50")
PRICE_CONFIRMATION = Decimal(envstr("PRICE_CONFIRMATION") or "0.50")
PRICE_EXPEDITED_FACTOR = Decimal(envstr("PRICE_EXPEDITED_FACTOR") or "1.5")
QUOTE_TTL_SECONDS = envint("QUOTE_TTL_SECONDS", 15 * 60)
IDEMPOTENCY_TTL_SECONDS = envint("IDEMPOTENCY_TTL_SECONDS", 24 * 3600)
DELIVERY_ASSIGN_TIMEOUT_SECONDS = envint("DELIVERY_ASSIGN_TIMEOUT_SECONDS", 2 * 3600)
DELIVERY_RETRY_BASE_SECONDS = float(envstr("DELIVERY_RETRY_BASE_SECONDS") or 2)
DELIVERY_RETRY_MAX_SECONDS = float(envstr("DELIVERY_RETRY_MAX_SECONDS") or 60)
# How many deliveries one workflow message assigns at most, taking new ones whose messages are
# still queued (deliveries.services.deliveries_assign_round); 1 assigns one by one.
DELIVERY_ASSIGN_ROUND = envint("DELIVERY_ASSIGN_ROUND", 16)
# A workflow message delivered this many times without finishing (its worker killed each time)
# fails its delivery for operators to see, below Service Bus's MaxDeliveryCount (10) and the
# RabbitMQ quorum queue's x-delivery-limit, which dead-letter it (README, production checklist).
WORKFLOW_MAX_DELIVERIES = envint("WORKFLOW_MAX_DELIVERIES", 5)
DRONE_BATTERY_RESERVE_PCT = float(envstr("DRONE_BATTERY_RESERVE_PCT") or 20)
# How old the fleet's shape (which models live at which bases) may be when the API refuses a
# delivery no drone could ever make; the workflow always checks against the database.
FLEET_SHAPE_CACHE_SECONDS = float(envstr("FLEET_SHAPE_CACHE_SECONDS") or 30)
# How far ahead a pickup may be scheduled, and how long before its pickup time a scheduled
# delivery books its drone (a drone is never held for days).
DELIVERY_MAX_DAYS_AHEAD = envint("DELIVERY_MAX_DAYS_AHEAD", 7)
DELIVERY_BOOKING_LEAD_SECONDS = envint("DELIVERY_BOOKING_LEAD_SECONDS", 30 * 60)

# Airspace: every route keeps this far (metres) from every no-fly zone active while it is flown.
AIRSPACE_MARGIN_M = float(envstr("AIRSPACE_MARGIN_M") or 50)
if AIRSPACE_MARGIN_M < 0:
    raise ImproperlyConfigured(f"AIRSPACE_MARGIN_M cannot be negative, not {AIRSPACE_MARGIN_M}")

# The fleet: telemetry and the simulator.
# A drone that has not reported for this long is `lost`: never assigned, its delivery flagged.
DRONE_LOST_AFTER_SECONDS = envint("DRONE_LOST_AFTER_SECONDS", 30)
# A drone landing with less battery than this charges before it flies again.
DRONE_MIN_DISPATCH_PCT = float(envstr("DRONE_MIN_DISPATCH_PCT") or 40)
# Telemetry keeps every drone's latest position in Redis; the database gets it at most this
# often per drone (and at every change of stage or state).
TELEMETRY_DB_WRITE_SECONDS = float(envstr("TELEMETRY_DB_WRITE_SECONDS") or 5)
# How many times faster than real time the fleet simulator flies. The flight model (ETAs,
# plans) uses it too, so that ETAs stay in the real clock; 1 wherever real drones fly.
FLEET_SIM_SPEEDUP = float(envstr("FLEET_SIM_SPEEDUP") or 1)
if FLEET_SIM_SPEEDUP <= 0:
    raise ImproperlyConfigured(f"FLEET_SIM_SPEEDUP must be more than 0, not {FLEET_SIM_SPEEDUP}")

CELERY_BEAT_SCHEDULE = {
    "outbox-relay": {"task": "workers.outbox_relay", "schedule": 5.0},
    "deliveries-sweep": {"task": "workers.deliveries_sweep", "schedule": 30.0},
    "deliveries-book-due": {"task": "workers.deliveries_book_due", "schedule": 5.0},
    "drones-watch": {"task": "workers.drones_watch", "schedule": 5.0},
    "flights-reroute": {"task": "workers.flights_reroute", "schedule": 5.0},
    "housekeeping": {"task": "workers.housekeeping", "schedule": 3600.0},
}

LOG_LEVEL = envstr("LOG_LEVEL", "INFO") or "INFO"
TASK_LOG_LEVEL = (envstr("TASK_LOG_LEVEL") or "WARNING").upper()
if TASK_LOG_LEVEL not in ("DEBUG", "INFO", "WARNING", "ERROR"):
    raise ImproperlyConfigured(
        f"TASK_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, not {TASK_LOG_LEVEL!r}"
    )
# json (the default, `make run` too): one JSON object a line with the trace and span ids, for the
# cluster's log collector; text: plain lines for a terminal. portal/logs.py.
LOG_FORMAT = (envstr("LOG_FORMAT") or "json").lower()
if LOG_FORMAT not in ("json", "text"):
    raise ImproperlyConfigured(f"LOG_FORMAT must be json or text, not {LOG_FORMAT!r}")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "trace": {"()": "portal.logs.TraceContext"},
        "redact": {"()": "portal.logs.RedactSecrets"},
    },
    "formatters": {
        "line": {"()": "portal.logs.JsonFormatter"}
        if LOG_FORMAT == "json"
        else {
            "()": "portal.logs.TextFormatter",
            "format": "%(asctime)s %(levelname)s %(name)s %(message)s",
        }
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "line",
            "filters": ["redact", "trace"],
        }
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "INFO"},
        "azure": {"level": "WARNING"},
        # A worker's line for every task received and every task done (INFO): two lines per
        # task at the workflow's rate, which traces and metrics already show. Failures are
        # logged at ERROR whatever this says; INFO brings the lines back.
        "celery.app.trace": {"level": TASK_LOG_LEVEL},
        "celery.worker.strategy": {"level": TASK_LOG_LEVEL},
        # Beat's line for every task it sends (INFO): six every few seconds, and a send it
        # cannot make is logged at ERROR whatever this says.
        "celery.beat": {"level": TASK_LOG_LEVEL},
    },
}
# Workers, beat and the simulator serve /metrics on this port (0: not at all); web and live
# serve it on their own port. PROMETHEUS_MULTIPROC_DIR: portal/metrics.py.
METRICS_PORT = envint("METRICS_PORT", 0)


# --- Airspace: the no-fly zone map in admin ---------------------------------------------------
# Leaflet and Leaflet.draw are the pinned django-leaflet package's static files, served by the
# project like every other static file (no CDN). django-leaflet is not an installed app: its
# admin module and widget import GeoDjango, which needs the GDAL library, and the image has none
# (https://github.com/makinacorpus/django-leaflet/issues/336); airspace.admin has its own widget.
_leaflet = importlib.util.find_spec("leaflet")
if _leaflet is None or _leaflet.origin is None:
    raise ImproperlyConfigured("django-leaflet is not installed: pip install -r requirements.txt")
STATICFILES_DIRS = [Path(_leaflet.origin).parent / "static"]
# The map tiles behind the zones (an XYZ URL template); empty for none: the map then shows a
# blank background, on which zones are drawn and edited all the same.
AIRSPACE_MAP_TILES_URL = envstr(
    "AIRSPACE_MAP_TILES_URL", "https://tile.openstreetmap.org/{z}/{x}/{y}.png"
)
AIRSPACE_MAP_TILES_ATTRIBUTION = envstr(
    "AIRSPACE_MAP_TILES_ATTRIBUTION",
    '&copy; <a href="https://www.openstreetmap.org/copyright">OpenStreetMap</a> contributors',
)
# The staff zone API's GeoJSON "type" members: three choice sets of one name, named here.
SPECTACULAR_SETTINGS["ENUM_NAME_OVERRIDES"] = {
    "GeoJSONFeatureTypeEnum": ["Feature"],
    "GeoJSONFeatureCollectionTypeEnum": ["FeatureCollection"],
    "ZoneGeometryTypeEnum": ["Polygon", "MultiPolygon"],
}


# --- Webhooks: businesses' signed delivery events (webhooks/) --------------------------------
# A dropoff ETA that moved by more than this since the last one announced is delivery.eta_changed.
WEBHOOK_ETA_CHANGE_SECONDS = envint("WEBHOOK_ETA_CHANGE_SECONDS", 120)
# An endpoint failing every attempt for this long is disabled and its business emailed.
WEBHOOK_DISABLE_AFTER_SECONDS = envint("WEBHOOK_DISABLE_AFTER_SECONDS", 24 * 3600)
# A message is retried, with exponential backoff and jitter, for this long, then failed.
WEBHOOK_RETRY_WINDOW_SECONDS = envint("WEBHOOK_RETRY_WINDOW_SECONDS", 24 * 3600)
WEBHOOK_RETRY_BASE_SECONDS = float(envstr("WEBHOOK_RETRY_BASE_SECONDS") or 5)
WEBHOOK_RETRY_MAX_SECONDS = float(envstr("WEBHOOK_RETRY_MAX_SECONDS") or 3600)
WEBHOOK_TIMEOUT_SECONDS = float(envstr("WEBHOOK_TIMEOUT_SECONDS") or 5)
# Webhook sending runs at this niceness in a thread of its own, so that a fan-out yields the CPU
# to the delivery workflow and to requests (portal/yielding.py); 0 runs it at the worker's own.
WORKER_YIELDING_NICE = envint("WORKER_YIELDING_NICE", 10)
# URLs resolving to private, loopback, link-local or reserved addresses are refused unless this
# is on (tests post to a receiver on 127.0.0.1); never in production.
WEBHOOK_ALLOW_PRIVATE = envbool("WEBHOOK_ALLOW_PRIVATE", False)
# How long a process trusts what it knows of which businesses have active endpoints (telemetry
# announces ETAs every few seconds per flying drone; without endpoints that costs no query).
WEBHOOK_ENDPOINTS_CACHE_SECONDS = float(envstr("WEBHOOK_ENDPOINTS_CACHE_SECONDS") or 5)
# Attempts (and finished messages) are kept this many days.
WEBHOOK_KEEP_DAYS = envint("WEBHOOK_KEEP_DAYS", 14)
CELERY_BEAT_SCHEDULE["webhooks-dispatch"] = {"task": "workers.webhooks_dispatch", "schedule": 2.0}
CELERY_BEAT_SCHEDULE["webhooks-housekeeping"] = {
    "task": "workers.webhooks_housekeeping",
    "schedule": 3600.0,
}


# --- Notifications: the stage emails and "Notify me" --------------------------------------------
# A worker's claim on an email older than this (it died mid-send) may be taken by another; it
# must exceed the longest send (EMAIL_TIMEOUT and then some).
NOTIFICATIONS_CLAIM_TIMEOUT_SECONDS = envint("NOTIFICATIONS_CLAIM_TIMEOUT_SECONDS", 180)
# A send the mail server refused is tried again after this, doubling up to the maximum, and
# given up after so many attempts (about a day with the defaults).
NOTIFICATIONS_RETRY_BASE_SECONDS = float(envstr("NOTIFICATIONS_RETRY_BASE_SECONDS") or 30)
NOTIFICATIONS_RETRY_MAX_SECONDS = float(envstr("NOTIFICATIONS_RETRY_MAX_SECONDS") or 3600)
NOTIFICATIONS_MAX_ATTEMPTS = envint("NOTIFICATIONS_MAX_ATTEMPTS", 30)
# The sweep leaves a just-recorded email this long to its own task.
NOTIFICATIONS_SWEEP_GRACE_SECONDS = float(envstr("NOTIFICATIONS_SWEEP_GRACE_SECONDS") or 10)
# How many addresses "Notify me" adds to one delivery at most.
NOTIFY_ME_MAX_PER_DELIVERY = envint("NOTIFY_ME_MAX_PER_DELIVERY", 5)
CELERY_BEAT_SCHEDULE["notifications-sweep"] = {
    "task": "workers.notifications_sweep",
    "schedule": 30.0,
}
CELERY_BEAT_SCHEDULE["notifications-housekeeping"] = {
    "task": "workers.notifications_housekeeping",
    "schedule": 3600.0,
}
