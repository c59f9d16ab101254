"""Settings for pytest: fixed keys, a SQLite file (shared with subprocesses), fast hashing."""

import os

os.environ.setdefault("SECRET_KEY", "test-secret-key-not-for-production")
# A fixed test key (urlsafe base64 of 32 bytes); never used outside tests.
os.environ.setdefault("JOBCENTER_FERNET_KEYS", "dGVzdC1rZXktMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDA=")
os.environ.setdefault("JOBCENTER_ALLOW_LOOPBACK_PROVIDERS", "1")

from jobcenter.settings import *  # noqa: F403
from jobcenter.settings import BASE_DIR, DATABASES, Q_CLUSTER, STORAGES

if DATABASES["default"]["ENGINE"] == "jobcenter.sqlite_engine":
    # A file, not memory: subprocesses (qcluster) and grep-the-file tests need one.
    # JOBCENTER_TEST_DB_SUFFIX keeps concurrent runs in one checkout apart.
    suffix = os.environ.get("JOBCENTER_TEST_DB_SUFFIX", "")
    DATABASES["default"]["TEST"] = {"NAME": str(BASE_DIR / f".test-db{suffix}.sqlite3")}

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
Q_CLUSTER["sync"] = True
ALLOWED_HOSTS = ["*"]
# The test client, live servers and the browser speak plain HTTP, and nothing ran
# collectstatic: the production HTTPS and static-file defaults are for deployments
# (tests/test_production.py checks those in a real gunicorn).
SECURE_SSL_REDIRECT = False
SESSION_COOKIE_SECURE = False
CSRF_COOKIE_SECURE = False
SECURE_HSTS_SECONDS = 0
STATIC_ROOT = None  # whitenoise then looks for no collected files (and warns of none)
STORAGES = {
    **STORAGES,
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
