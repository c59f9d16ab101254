"""A local server that speaks the providers' job APIs, for the demo, tests and benchmarks.

Run it with `python -m providers.sandbox --port 8765` or `python manage.py sandbox`.
"""

from providers.sandbox.server import SandboxApp, make_server

__all__ = ["SandboxApp", "make_server"]
