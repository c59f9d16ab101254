"""WSGI entry point (gunicorn jobcenter.wsgi)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "jobcenter.settings")
application = get_wsgi_application()
