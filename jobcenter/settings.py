"""Settings, all from the environment.

Defaults suit the embedded set-up (a SQLite file and django-q2's ORM broker). With
DEBUG off, nothing secret has a default: start-up fails and says what to set.
"""

from __future__ import annotations

import ipaddress
import json
import os
import warnings
from datetime import timedelta
from pathlib import Path

import dj_database_url
from csp import constants as csp_constants
from django.core.exceptions import ImproperlyConfigured

from jobcenter.logformat import logging_config
from jobcenter.oidc import config as oidc_config
from providers import options_from_environment, register_definitions

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    return int(value) if value else default


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


DEBUG = env_bool("DEBUG")

SECRET_KEY = os.environ.get("SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY is not set. Set SECRET_KEY (a long random string) in the environment, "
            "or DEBUG=1 for a local development run."
        )
    SECRET_KEY = "django-insecure-development-only-key-not-for-production"  # noqa: S105

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "127.0.0.1,localhost" if DEBUG else "")


def _fernet_keys() -> list[str]:
    """JOBCENTER_FERNET_KEYS, newest first; a development key file when DEBUG and unset."""
    keys = env_list("JOBCENTER_FERNET_KEYS")
    if keys:
        return keys
    if not DEBUG:
        raise ImproperlyConfigured(
            "JOBCENTER_FERNET_KEYS is not set: stored provider credentials are encrypted with "
            'it. Generate a key with `python -c "from cryptography.fernet import Fernet; '
            'print(Fernet.generate_key().decode())"` and set JOBCENTER_FERNET_KEYS to it '
            "(comma-separate several keys, newest first, to rotate)."
        )
    key_file = Path(os.environ.get("JOBCENTER_DEV_KEY_FILE") or BASE_DIR / ".dev-fernet-key")
    if not key_file.exists():
        from cryptography.fernet import Fernet

        key_file.write_text(Fernet.generate_key().decode() + "\n")
        key_file.chmod(0o600)
        warnings.warn(
            f"JOBCENTER_FERNET_KEYS is not set; created a development key in {key_file} "
            "(git-ignored). Set JOBCENTER_FERNET_KEYS in any real deployment.",
            stacklevel=1,
        )
    return [key_file.read_text().strip()]


JOBCENTER_FERNET_KEYS = _fernet_keys()

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "knox",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_q",
    "axes",
    "csp",
    "jobcenter",
]

MIDDLEWARE = [
    # First: /healthz answers a load balancer before the Host check and the HTTPS
    # redirect (it probes the backend by IP, over plain HTTP).
    "jobcenter.health.HealthCheckMiddleware",
    # /metrics for Prometheus, likewise ahead of them (the scraper too comes by address).
    "jobcenter.observability.views.MetricsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # The Content-Security-Policy header (django-csp), static files' answers included.
    "jobcenter.middleware.ContentSecurityPolicyMiddleware",
    # Static files from the web process itself, compressed and cached forever by hash.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # A sign-in begun at the identity provider is checked with it again now and then.
    "jobcenter.oidc.views.SessionRecheck",
    # The audit log's actor and address: the request's user and client (jobcenter.audit).
    "jobcenter.audit.context.AuditMiddleware",
    # Admin pages only: times in the staff member's own zone (jobcenter.middleware).
    "jobcenter.middleware.StaffTimezoneMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last (django-axes): turns a login refused for too many failures into the lockout page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "jobcenter.urls"
WSGI_APPLICATION = "jobcenter.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
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


def _database() -> dict:
    url = os.environ.get("DATABASE_URL") or f"sqlite:///{BASE_DIR / 'jobcenter.sqlite3'}"
    config = dj_database_url.parse(url, conn_max_age=60, conn_health_checks=True)
    if config["ENGINE"] == "django.db.backends.sqlite3":
        # One file shared by the web server, the cluster and commands: WAL lets readers
        # run beside a writer, IMMEDIATE takes the write lock up front (no upgrade
        # deadlocks), and the timeout waits for it instead of failing. A 32 MiB page
        # cache (SQLite's default is 2 MiB) holds a sync transaction's pages of ten job
        # indexes without spilling them to the log mid-transaction.
        config["ENGINE"] = "jobcenter.sqlite_engine"
        config["CONN_MAX_AGE"] = 0
        config["CONN_HEALTH_CHECKS"] = False
        config["OPTIONS"] = {
            "init_command": (
                "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA cache_size=-32768;"
            ),
            "transaction_mode": "IMMEDIATE",
            "timeout": 30,
        }
    return config


DATABASES = {"default": _database()}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Logins ------------------------------------------------------------------------------
# django-axes counts failed logins (the admin's and the API's login pages) per username and
# per client address in the cache (the database cache below: shared by every web process
# and node); either reaching the limit refuses every login for it, right password
# included, until the cool-off has passed since its last failure (jobcenter.middleware).
AUTHENTICATION_BACKENDS = [
    "jobcenter.middleware.LockoutBackend",  # first: refuses before any password is tried
    # Password logins turned off (JOBCENTER_PASSWORD_LOGIN) but for break-glass superusers.
    "jobcenter.oidc.backends.PasswordLoginGate",
    "django.contrib.auth.backends.ModelBackend",
    # Sign-in with OpenID Connect (below); answers only the callback of a sign-in.
    "jobcenter.oidc.backends.OIDCBackend",
]
JOBCENTER_LOGIN_FAILURE_LIMIT = env_int("JOBCENTER_LOGIN_FAILURE_LIMIT", 5)
JOBCENTER_LOGIN_COOLOFF_MINUTES = env_int("JOBCENTER_LOGIN_COOLOFF_MINUTES", 15)
if JOBCENTER_LOGIN_FAILURE_LIMIT < 1 or JOBCENTER_LOGIN_COOLOFF_MINUTES < 1:
    raise ImproperlyConfigured(
        "JOBCENTER_LOGIN_FAILURE_LIMIT and JOBCENTER_LOGIN_COOLOFF_MINUTES must be at least 1."
    )
AXES_HANDLER = "axes.handlers.cache.AxesCacheHandler"
AXES_FAILURE_LIMIT = JOBCENTER_LOGIN_FAILURE_LIMIT
AXES_COOLOFF_TIME = timedelta(minutes=JOBCENTER_LOGIN_COOLOFF_MINUTES)
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_CLIENT_IP_CALLABLE = "jobcenter.middleware.client_address"
AXES_LOCKOUT_CALLABLE = "jobcenter.middleware.lockout_response"
# The cache handler keeps no database records: no empty admin pages for them.
AXES_ENABLE_ADMIN = False
# Its log lines name the address (to lift a lockout by it) and mask the username (a
# password typed into that field must not reach the log); no start-up line per command.
AXES_SENSITIVE_PARAMETERS = ["username"]
AXES_VERBOSE = False

# --- Sign-in with OpenID Connect (jobcenter.oidc, mozilla-django-oidc) ---------------------
# On when an issuer is set (https): the login page offers its button; endpoints come from
# its discovery document. Emails must be verified and in an allowed domain (blank: any).
# Groups come in JOBCENTER_OIDC_GROUPS_CLAIM; JOBCENTER_OIDC_GROUP_MAP (JSON) maps each to
# roles "staff", "superuser", "team:<name>", "group:<name>" (a permission group), applied
# on every sign-in. A sign-in is checked with the provider again after
# JOBCENTER_OIDC_RECHECK_SECONDS. JOBCENTER_PASSWORD_LOGIN off leaves passwords to the
# break-glass superusers JOBCENTER_BREAK_GLASS_USERS (usernames).
JOBCENTER_OIDC_ISSUER = os.environ.get("JOBCENTER_OIDC_ISSUER", "").strip().rstrip("/")
OIDC_RP_CLIENT_ID = os.environ.get("JOBCENTER_OIDC_CLIENT_ID", "").strip()
OIDC_RP_CLIENT_SECRET = os.environ.get("JOBCENTER_OIDC_CLIENT_SECRET", "").strip()
OIDC_RP_SCOPES = os.environ.get("JOBCENTER_OIDC_SCOPES") or "openid email profile"
JOBCENTER_OIDC_ALLOWED_DOMAINS = [d.lower() for d in env_list("JOBCENTER_OIDC_ALLOWED_DOMAINS")]
JOBCENTER_OIDC_GROUPS_CLAIM = os.environ.get("JOBCENTER_OIDC_GROUPS_CLAIM") or "groups"
JOBCENTER_OIDC_GROUP_MAP = oidc_config.group_map(os.environ.get("JOBCENTER_OIDC_GROUP_MAP"))
JOBCENTER_OIDC_BUTTON_LABEL = (
    os.environ.get("JOBCENTER_OIDC_BUTTON_LABEL") or "Sign in with your company account"
)
JOBCENTER_OIDC_RECHECK_SECONDS = env_int("JOBCENTER_OIDC_RECHECK_SECONDS", 900)
JOBCENTER_PASSWORD_LOGIN = env_bool("JOBCENTER_PASSWORD_LOGIN", True)
JOBCENTER_BREAK_GLASS_USERS = env_list("JOBCENTER_BREAK_GLASS_USERS")
oidc_config.check(
    JOBCENTER_OIDC_ISSUER, OIDC_RP_CLIENT_ID, OIDC_RP_CLIENT_SECRET,
    password_login=JOBCENTER_PASSWORD_LOGIN, break_glass=JOBCENTER_BREAK_GLASS_USERS,
)  # fmt: skip
# mozilla-django-oidc's own: RS256 ID tokens checked against the provider's keys, PKCE,
# the ID token kept in the session (to end the provider's session on log out).
OIDC_RP_SIGN_ALGO = "RS256"
OIDC_USE_PKCE = True
OIDC_STORE_ID_TOKEN = True
OIDC_TIMEOUT = 10
OIDC_RENEW_ID_TOKEN_EXPIRY_SECONDS = JOBCENTER_OIDC_RECHECK_SECONDS
OIDC_EXEMPT_URLS = ["admin:login", "healthz"]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = os.environ.get("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
# Where `collectstatic` puts the files that whitenoise serves.
STATIC_ROOT = Path(os.environ.get("STATIC_ROOT") or BASE_DIR / "staticfiles")
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    # Production: hashed names (cacheable forever) and pre-compressed files, which need
    # `collectstatic`; development serves the app directories as they are.
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}
if DEBUG:
    # Development serves the apps' files through the finders; STATIC_ROOT need not exist.
    warnings.filterwarnings("ignore", message="No directory at: ", category=UserWarning)

# --- HTTPS (production) ---------------------------------------------------------------
# TLS ends at the load balancer, which sets X-Forwarded-Proto; gunicorn must be reachable
# only through it (a client that reaches gunicorn directly could claim https). Each
# setting can be turned off from the environment; with DEBUG on they default to off.
JOBCENTER_BEHIND_TLS_PROXY = env_bool("JOBCENTER_BEHIND_TLS_PROXY", not DEBUG)
SECURE_PROXY_SSL_HEADER = (
    ("HTTP_X_FORWARDED_PROTO", "https") if JOBCENTER_BEHIND_TLS_PROXY else None
)
# Proxies in front of gunicorn that append to X-Forwarded-For (a CDN before the load
# balancer makes 2): the client's address is the entry this many from the right. Read only
# behind the proxy; entries further left are whatever the client sent.
JOBCENTER_PROXY_COUNT = env_int("JOBCENTER_PROXY_COUNT", 1)
if JOBCENTER_PROXY_COUNT < 1:
    raise ImproperlyConfigured("JOBCENTER_PROXY_COUNT must be at least 1.")
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", not DEBUG)
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", not DEBUG)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", not DEBUG)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0 if DEBUG else 31_536_000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
# Origins allowed to POST (admin forms, API with session auth) besides the request's own
# host, e.g. https://jobs.example.com when a proxy rewrites the Host header.
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")
# Preload is a decision for the whole domain (a submission to the browsers' list that is
# slow to undo), so it is opt-in, and check --deploy is not asked to nag about it.
SILENCED_SYSTEM_CHECKS = [] if SECURE_HSTS_PRELOAD else ["security.W021"]

# --- Content-Security-Policy (django-csp; jobcenter.middleware) -----------------------
# Scripts only from Job Center's own static files: no inline script on any page, no CDN
# (Swagger UI comes from drf-spectacular-sidecar). Stylesheets from static files too; an
# inline <style> only with the request's nonce (the browsable API's) or, for the one
# Django's admin writes on a change list without action bars, its hash. Images also as data:
# URLs (the admin's and Swagger UI's icons). No plugins, no <base>, no framing by any
# site, forms post only here. Style attributes are allowed on the browsable API's pages
# alone (jobcenter.middleware.ContentSecurityPolicyMiddleware).
JOBCENTER_CSP_REPORT_URI = os.environ.get("JOBCENTER_CSP_REPORT_URI", "").strip()
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": [
            "'self'",
            csp_constants.NONCE,
            # <style>#changelist table thead th:first-child {width: inherit}</style>
            "'sha256-blvLUW3UscWqsXGByNOqdBboM+ShWAuugp2mC/wbafU='",
        ],
        "img-src": ["'self'", "data:"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "frame-ancestors": ["'none'"],
        "form-action": ["'self'"],
        **({"report-uri": [JOBCENTER_CSP_REPORT_URI]} if JOBCENTER_CSP_REPORT_URI else {}),
    }
}

REDIS_URL = os.environ.get("REDIS_URL", "")

# The cache holds the API's and the admin's throttle counters. It lives in the database
# every web process already shares, so a limit holds across gunicorn workers and nodes
# (a per-process memory cache would multiply it). Its table is created after `migrate`
# (jobcenter.apps). Not Redis: a cache clear there would flush the broker's queue too.
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.db.DatabaseCache",
        "LOCATION": "jobcenter_cache",
    }
}

# django-q2: the ORM broker by default, named explicitly; retry > timeout > the longest
# sync; one attempt (the next scheduled run is the retry); no catch-up storm after downtime.
Q_CLUSTER: dict = {
    "name": "jobcenter",
    "workers": int(os.environ.get("JOBCENTER_Q_WORKERS", "4")),
    "timeout": int(os.environ.get("JOBCENTER_TASK_TIMEOUT", "900")),
    "retry": int(os.environ.get("JOBCENTER_TASK_RETRY", "1200")),
    "max_attempts": 1,
    "ack_failures": True,
    "catch_up": False,
    "save_limit": 250,
    "label": "Task queue",
}
if REDIS_URL:
    Q_CLUSTER["redis"] = REDIS_URL
else:
    Q_CLUSTER["orm"] = "default"

# REST API (/api/v1/): token or session (CSRF) auth; staff with the model's permissions,
# reads included (jobcenter.api.permissions); JSON in; keyset pages; tracking,
# syncing and exports throttled per user.
REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # Token first: an anonymous caller gets 401 with `WWW-Authenticate: Token`.
        "jobcenter.api.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": [
        "rest_framework.permissions.IsAdminUser",
        "jobcenter.api.permissions.ModelPermissions",
    ],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_PAGINATION_CLASS": "jobcenter.api.pagination.KeysetPagination",
    "DEFAULT_THROTTLE_RATES": {
        "jobcenter-track": os.environ.get("JOBCENTER_API_TRACK_RATE", "120/min"),
        "jobcenter-sync": os.environ.get("JOBCENTER_API_SYNC_RATE", "30/min"),
        # Exports, from the API and the admin together, per user.
        "jobcenter-export": os.environ.get("JOBCENTER_EXPORT_RATE", "30/hour"),
    },
}

# API tokens (jobcenter.tokens): django-rest-knox's, stored as SHA-512 digests, named,
# expiring, sent as `Authorization: Token <key>`. Keys start with "jc_" so that secret
# scanners and people can tell one when they see it.
KNOX_TOKEN_MODEL = "jobcenter.ApiToken"  # noqa: S105 (a model, not a secret)
# knox's migrations would create its own token table, unused once swapped for ours (and
# one that PostgreSQL's TRUNCATE of users then trips over): the app runs without them.
MIGRATION_MODULES = {"knox": None}
REST_KNOX = {"AUTH_HEADER_PREFIX": "Token", "TOKEN_PREFIX": "jc_", "AUTO_REFRESH": False}
# A new token's lifetime unless its maker says otherwise; no token lives longer than a
# year, and none for ever.
JOBCENTER_API_TOKEN_MAX_DAYS = 366
JOBCENTER_API_TOKEN_DAYS = env_int("JOBCENTER_API_TOKEN_DAYS", 90)
if not 1 <= JOBCENTER_API_TOKEN_DAYS <= JOBCENTER_API_TOKEN_MAX_DAYS:
    raise ImproperlyConfigured(
        f"JOBCENTER_API_TOKEN_DAYS must be from 1 to {JOBCENTER_API_TOKEN_MAX_DAYS} (days), "
        f"not {JOBCENTER_API_TOKEN_DAYS}."
    )

SPECTACULAR_SETTINGS = {
    "TITLE": "Job Center API",
    "DESCRIPTION": (
        "The bulk jobs of every provider account in one place: jobs, their "
        "history (snapshots) and error records, provider accounts and sync runs. Staff only; "
        "reads need the model's view permission, writes its change permission. Lists are "
        "cursor-paged: follow `next`."
    ),
    "VERSION": "1.0.0",
    "SCHEMA_PATH_PREFIX": r"/api/v1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAdminUser"],
    "COMPONENT_SPLIT_REQUEST": True,
    # Swagger UI from drf-spectacular-sidecar's static files: no CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "ENUM_NAME_OVERRIDES": {
        "JobStatusEnum": "jobcenter.queries.filters.STATUS_CHOICES",
        "SyncOutcomeEnum": "jobcenter.models.SyncOutcome",
        "SyncTriggerEnum": "jobcenter.models.SyncTrigger",
        "AccountStatusEnum": "jobcenter.models.AccountStatus",
    },
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "jobcenter.api.schema.add_error_responses",
    ],
}

# LOG_FORMAT=json: one JSON object per line (jobcenter.logformat) for log collectors;
# "plain" (the default) for people reading a terminal.
LOG_FORMAT = (os.environ.get("LOG_FORMAT") or "plain").strip().lower()
if LOG_FORMAT not in {"plain", "json"}:
    raise ImproperlyConfigured(f"LOG_FORMAT must be plain or json, not {LOG_FORMAT!r}.")
# Every line of a sync carries its ids (jobcenter.logcontext). "providers.http" logs each
# provider request at DEBUG; JOBCENTER_PROVIDER_REQUEST_LOG_LEVEL sets its level alone.
JOBCENTER_PROVIDER_REQUEST_LOG_LEVEL = os.environ.get("JOBCENTER_PROVIDER_REQUEST_LOG_LEVEL", "")
LOGGING = logging_config(
    LOG_FORMAT, os.environ.get("LOG_LEVEL", "INFO"), JOBCENTER_PROVIDER_REQUEST_LOG_LEVEL
)

# --- Job Center ------------------------------------------------------------------------
# Hosts beside each provider's documented ones that credentials may be sent to.
JOBCENTER_EXTRA_PROVIDER_HOSTS = env_list("JOBCENTER_EXTRA_PROVIDER_HOSTS")
# Loopback base URLs (the sandbox) are accepted only in development.
JOBCENTER_ALLOW_LOOPBACK_PROVIDERS = env_bool("JOBCENTER_ALLOW_LOOPBACK_PROVIDERS", DEBUG)
# A folder of provider definitions (YAML, docs/providers.md) beside providers/definitions/;
# every one is checked here, and an invalid one stops start-up with its file and line.
JOBCENTER_PROVIDER_DEFINITIONS_DIR = os.environ.get("JOBCENTER_PROVIDER_DEFINITIONS_DIR", "")
register_definitions(JOBCENTER_PROVIDER_DEFINITIONS_DIR)
# Options handed to provider modules, per provider slug: those set by the environment
# variables each provider names (Provider.environment_options).
JOBCENTER_PROVIDER_OPTIONS = options_from_environment(os.environ)
# How long a sync holds its account without renewing (it renews on every page): the most
# a killed worker can delay the next run.
JOBCENTER_LEASE_SECONDS = int(os.environ.get("JOBCENTER_LEASE_SECONDS", "120"))
# Freshness. The dispatcher (a loop in the cluster) looks for due work every
# JOBCENTER_DISPATCH_SECONDS; 0 dispatches once a minute from the Schedule alone (the old
# design). Unfinished jobs are refreshed every JOBCENTER_HOT_SECONDS by the cheapest call
# each provider offers (the hot lane; 0 turns it off), using at most
# JOBCENTER_HOT_HEADROOM of each rate limit so sweeps keep the rest.
JOBCENTER_DISPATCH_SECONDS = env_int("JOBCENTER_DISPATCH_SECONDS", 5)
JOBCENTER_HOT_SECONDS = env_int("JOBCENTER_HOT_SECONDS", 15)
JOBCENTER_HOT_HEADROOM = float(os.environ.get("JOBCENTER_HOT_HEADROOM") or "0.5")
if JOBCENTER_DISPATCH_SECONDS < 0 or JOBCENTER_HOT_SECONDS < 0:
    raise ImproperlyConfigured("JOBCENTER_DISPATCH_SECONDS and JOBCENTER_HOT_SECONDS are >= 0.")
if not 0 < JOBCENTER_HOT_HEADROOM <= 1:
    raise ImproperlyConfigured("JOBCENTER_HOT_HEADROOM is a share of a rate limit: 0 < x <= 1.")
# Non-terminal jobs refreshed by id, and failed jobs whose errors are fetched, per run.
JOBCENTER_REFRESH_PER_RUN = int(os.environ.get("JOBCENTER_REFRESH_PER_RUN", "500"))
JOBCENTER_ERROR_FETCHES_PER_RUN = int(os.environ.get("JOBCENTER_ERROR_FETCHES_PER_RUN", "200"))
# Error records kept per job (a profile import can report thousands).
JOBCENTER_MAX_ERRORS_PER_JOB = int(os.environ.get("JOBCENTER_MAX_ERRORS_PER_JOB", "10000"))
# Error records keep the failing record's own data (a profile, an event, a user: what
# each provider declares as such, `providers.base.PersonalData`) with "keep", or drop it
# and keep only what went wrong with "drop".
JOBCENTER_ERROR_RECORD_PERSONAL_DATA = (
    (os.environ.get("JOBCENTER_ERROR_RECORD_PERSONAL_DATA") or "keep").strip().lower()
)
if JOBCENTER_ERROR_RECORD_PERSONAL_DATA not in {"keep", "drop"}:
    raise ImproperlyConfigured(
        "JOBCENTER_ERROR_RECORD_PERSONAL_DATA must be keep or drop, "
        f"not {JOBCENTER_ERROR_RECORD_PERSONAL_DATA!r}."
    )
# Connect and read timeouts of every provider request, in seconds.
JOBCENTER_HTTP_TIMEOUT = tuple(
    float(part) for part in os.environ.get("JOBCENTER_HTTP_TIMEOUT", "5,30").split(",")
)
# The outbound policy (providers.outbound) of provider requests and webhooks alike: the
# whole time one request may take, in seconds (the timeouts above bound each wait for a
# byte, not a request); the most bytes of an answer read (more is a BadResponse); inside
# networks (CIDR) that may be reached anyway, an on-premises proxy say (https still).
JOBCENTER_HTTP_DEADLINE = float(os.environ.get("JOBCENTER_HTTP_DEADLINE") or "60")
JOBCENTER_MAX_RESPONSE_BYTES = env_int("JOBCENTER_MAX_RESPONSE_BYTES", 10 * 1024 * 1024)
JOBCENTER_OUTBOUND_ALLOWED_NETWORKS = env_list("JOBCENTER_OUTBOUND_ALLOWED_NETWORKS")
try:
    for _network in JOBCENTER_OUTBOUND_ALLOWED_NETWORKS:
        ipaddress.ip_network(_network, strict=False)
except ValueError as _exc:
    raise ImproperlyConfigured(f"JOBCENTER_OUTBOUND_ALLOWED_NETWORKS: {_exc}") from None
if JOBCENTER_HTTP_DEADLINE <= 0 or JOBCENTER_MAX_RESPONSE_BYTES < 1:
    raise ImproperlyConfigured(
        "JOBCENTER_HTTP_DEADLINE and JOBCENTER_MAX_RESPONSE_BYTES must be positive."
    )
# Retries of one provider request (providers.http.RetryPolicy): attempts, exponential
# backoff with jitter from `backoff_base` up to `backoff_cap` seconds, all within
# `max_total_wait`; a 429 asking for at most `max_inline_retry_after` seconds is waited out.
JOBCENTER_RETRY = {
    "max_attempts": int(os.environ.get("JOBCENTER_RETRY_ATTEMPTS", "4")),
    "backoff_base": float(os.environ.get("JOBCENTER_RETRY_BACKOFF_BASE", "0.5")),
    "backoff_cap": 8.0,
    "max_total_wait": 30.0,
    "max_inline_retry_after": 10.0,
}
JOBCENTER_DEFAULT_SYNC_MINUTES = int(os.environ.get("JOBCENTER_DEFAULT_SYNC_MINUTES", "1"))
# /healthz (jobcenter.health) fails when enabled accounts exist and none has synced
# successfully for this many minutes (0: report the age, never fail on it).
JOBCENTER_HEALTH_MAX_SYNC_AGE_MINUTES = int(
    os.environ.get("JOBCENTER_HEALTH_MAX_SYNC_AGE_MINUTES", "60")
)
# /metrics (jobcenter.observability): readable with `Authorization: Bearer <token>`, and
# from loopback while DEBUG is on; without a token and DEBUG off it answers 404.
JOBCENTER_METRICS_TOKEN = os.environ.get("JOBCENTER_METRICS_TOKEN", "").strip()
if JOBCENTER_METRICS_TOKEN and len(JOBCENTER_METRICS_TOKEN) < 32:
    raise ImproperlyConfigured("JOBCENTER_METRICS_TOKEN must be at least 32 characters long.")
# prometheus_client's multiprocess mode: a directory shared by the web server and the
# cluster of one node, where each process keeps its counters (prometheus_client reads it
# from the environment itself; jobcenter.observability.files empties it on a fresh start).
PROMETHEUS_MULTIPROC_DIR = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")
# Retention (jobcenter.sync.retention, `manage.py prune_snapshots`): snapshots observed more
# than this many days ago are deleted, except each job's first and last and the snapshot
# its alerts' episode rests on (0: keep all).
JOBCENTER_SNAPSHOT_RETENTION_DAYS = int(os.environ.get("JOBCENTER_SNAPSHOT_RETENTION_DAYS", "0"))
# Rows (snapshots: ids) per delete transaction: the longest a prune holds its locks.
JOBCENTER_RETENTION_BATCH_SIZE = int(os.environ.get("JOBCENTER_RETENTION_BATCH_SIZE", "5000"))
# The other tables that grow (jobcenter.sync.pruning, `manage.py prune`; 0 keeps it all):
# sync runs, error records of jobs gone this long, alert events and deliveries, django-q2
# task rows, the audit log. Each keeps what is still read (docs/operations.md#retention).
# `setup_schedules` keeps a daily prune while JOBCENTER_PRUNE_DAILY is on.
JOBCENTER_SYNC_RUN_RETENTION_DAYS = env_int("JOBCENTER_SYNC_RUN_RETENTION_DAYS", 30)
JOBCENTER_GONE_ERROR_RETENTION_DAYS = env_int("JOBCENTER_GONE_ERROR_RETENTION_DAYS", 30)
JOBCENTER_ALERT_RETENTION_DAYS = env_int("JOBCENTER_ALERT_RETENTION_DAYS", 90)
JOBCENTER_TASK_RETENTION_DAYS = env_int("JOBCENTER_TASK_RETENTION_DAYS", 7)
JOBCENTER_AUDIT_RETENTION_DAYS = env_int("JOBCENTER_AUDIT_RETENTION_DAYS", 365)
if any(days < 0 for name, days in globals().items() if name.endswith("_RETENTION_DAYS")):
    raise ImproperlyConfigured("JOBCENTER_*_RETENTION_DAYS are >= 0 (0 keeps the table).")
JOBCENTER_PRUNE_DAILY = env_bool("JOBCENTER_PRUNE_DAILY")
# A job that is not terminal and has been running (or waiting) longer than this many
# minutes counts as stuck on the dashboard and in the job list's "stuck" filter. Keys are
# job kinds (Job.kind); "*" is the default for the rest. JSON in the environment, e.g.
# JOBCENTER_STUCK_MINUTES='{"*": 120, "profile-bulk-import-job": 360}'.
JOBCENTER_STUCK_MINUTES: dict[str, int] = {
    "*": 120,
    **json.loads(os.environ.get("JOBCENTER_STUCK_MINUTES") or "{}"),
}
# Live pages (jobcenter.admin.live): the job page, the job and account lists and the
# dashboard ask every this many seconds whether what they show changed, and update in
# place when it did. 0 turns live updates off (no marker, no polling, no endpoints).
JOBCENTER_LIVE_SECONDS = env_int("JOBCENTER_LIVE_SECONDS", 2)
if JOBCENTER_LIVE_SECONDS < 0:
    raise ImproperlyConfigured("JOBCENTER_LIVE_SECONDS is >= 0 (0 turns live updates off).")

# --- Email and alerts (jobcenter.alerts) --------------------------------------------------
# Email goes through Django's backend: the console in development, SMTP from the
# environment otherwise (any SMTP server; EMAIL_BACKEND overrides both).
EMAIL_BACKEND = os.environ.get("EMAIL_BACKEND") or (
    "django.core.mail.backends.console.EmailBackend"
    if DEBUG
    else "django.core.mail.backends.smtp.EmailBackend"
)
EMAIL_HOST = os.environ.get("EMAIL_HOST", "localhost")
EMAIL_PORT = int(os.environ.get("EMAIL_PORT", "25"))
EMAIL_HOST_USER = os.environ.get("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = os.environ.get("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS")
EMAIL_USE_SSL = env_bool("EMAIL_USE_SSL")
EMAIL_TIMEOUT = float(os.environ.get("EMAIL_TIMEOUT", "10"))
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "Job Center <jobcenter@localhost>")
# The address staff open Job Center at, for links in alerts (blank: paths only).
JOBCENTER_SITE_URL = os.environ.get(
    "JOBCENTER_SITE_URL", "http://127.0.0.1:8000" if DEBUG else ""
).rstrip("/")
# More alerts than this for one rule in one evaluation are sent as one digest.
JOBCENTER_ALERT_DIGEST_THRESHOLD = int(os.environ.get("JOBCENTER_ALERT_DIGEST_THRESHOLD", "10"))
# Seconds one webhook request may take (connect and read each).
JOBCENTER_ALERT_WEBHOOK_TIMEOUT = float(os.environ.get("JOBCENTER_ALERT_WEBHOOK_TIMEOUT", "5"))
# Attempts per delivery (email or webhook); retries wait `backoff` seconds, doubling up
# to an hour. Retries run from the every-minute schedule, never inside a sync.
JOBCENTER_ALERT_DELIVERY_ATTEMPTS = int(os.environ.get("JOBCENTER_ALERT_DELIVERY_ATTEMPTS", "5"))
JOBCENTER_ALERT_RETRY_BACKOFF = float(os.environ.get("JOBCENTER_ALERT_RETRY_BACKOFF", "60"))
# Webhooks to loopback addresses only in development (as for provider base URLs).
JOBCENTER_ALERT_ALLOW_LOOPBACK_WEBHOOKS = env_bool(
    "JOBCENTER_ALERT_ALLOW_LOOPBACK_WEBHOOKS", JOBCENTER_ALLOW_LOOPBACK_PROVIDERS
)
