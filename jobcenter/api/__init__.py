"""The REST API under /api/v1/ (Django REST framework, django-filter, drf-spectacular)."""
