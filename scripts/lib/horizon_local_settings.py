# Horizon's local_settings.py for the magnum-ui compatibility test: scripts/horizon copies it
# into .venv-horizon's openstack_dashboard/local/. Everything test-specific comes from the
# environment the test starts Horizon with, so that one venv serves every run:
#
#   MAGNUM_HORIZON_KEYSTONE_URL   the test Keystone's v3 URL (required)
#   MAGNUM_HORIZON_STATE_DIR      where Horizon may write (compressed assets, secret key)
import os

DEBUG = True
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
SECRET_KEY = os.environ.get("MAGNUM_HORIZON_SECRET_KEY", "magnum-rs-horizon-test-only")

OPENSTACK_KEYSTONE_URL = os.environ["MAGNUM_HORIZON_KEYSTONE_URL"]
OPENSTACK_KEYSTONE_DEFAULT_ROLE = "member"
# magnum-ui 19 speaks microversion 1.13 at most (what python-magnumclient 4.9 was tested with).
OPENSTACK_API_VERSIONS = {"identity": 3, "image": 2, "compute": 2, "container-infra": "1.13"}

# No database: sessions in signed cookies, a per-process cache.
SESSION_ENGINE = "django.contrib.sessions.backends.signed_cookies"
CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# Assets are compiled on demand (no collectstatic/compress step); compressor keeps what it
# compiled in files, so that a second run in the same venv skips the SCSS compilation.
_state = os.environ.get("MAGNUM_HORIZON_STATE_DIR", "/tmp/magnum-horizon")
STATIC_ROOT = os.path.join(_state, "static")
COMPRESS_OFFLINE = False
COMPRESS_ENABLED = False
COMPRESS_CACHE_BACKEND = "compressor"
CACHES["compressor"] = {
    "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
    "LOCATION": os.path.join(_state, "compressor-cache"),
}

# Loopback HTTP only.
SESSION_COOKIE_SECURE = False
CSRF_COOKIE_SECURE = False
OPENSTACK_SSL_NO_VERIFY = True

OPENSTACK_NEUTRON_NETWORK = {
    "enable_router": False,
    "enable_quotas": False,
    "enable_distributed_router": False,
    "enable_ha_router": False,
    "enable_fip_topology_check": False,
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "INFO"},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        "urllib3": {"level": "WARNING"},
    },
}
