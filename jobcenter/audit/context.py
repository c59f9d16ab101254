"""Who is acting, and from where: the origin an audit record is written with.

A context variable holds the current origin. `AuditMiddleware` sets it to the request
for the whole of a web request; the user is read from the request only when a record is
written, so an API call authenticated by DRF inside the view (a token) is seen as its
user: DRF hands the user it authenticates to the underlying request. Commands based on
`jobcenter.management.base.AuditedCommand` set `command:<name>`. Anything else (a
command of Django's or django-q2's run from a shell, a task in a worker) is
`command:<name>` when the process was started as `manage.py <name>`, else `system`.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from functools import cache

from django.core.management import get_commands
from django.http import HttpRequest, HttpResponse

from jobcenter.middleware import client_address


@dataclass(frozen=True)
class Actor:
    """Who made a change, as the record keeps it."""

    user_id: int | None
    name: str  # the username at the time, "command:<name>", "anonymous" or "system"
    address: str  # the client's address, or the host a command ran on


@dataclass(frozen=True)
class Origin:
    """What the context variable holds: a request (its user read late) or a fixed actor."""

    request: HttpRequest | None = None
    actor: Actor | None = None


_origin: ContextVar[Origin | None] = ContextVar("jobcenter_audit_origin", default=None)


@cache
def host_name() -> str:
    return socket.gethostname()


def _process_actor() -> Actor:
    """`command:<name>` for a process started as `manage.py <name>`, else `system`."""
    argv = sys.argv
    if len(argv) > 1 and argv[1] in get_commands():
        return Actor(None, f"command:{argv[1]}", host_name())
    return Actor(None, "system", host_name())


def current_actor() -> Actor:
    """The actor of a change being recorded now."""
    origin = _origin.get()
    if origin is None:
        return _process_actor()
    if origin.actor is not None:
        return origin.actor
    request = origin.request
    user = getattr(request, "user", None)
    # The address the login lockout counts: behind the proxy, the forwarded one.
    address = client_address(request) or ""
    if user is not None and user.is_authenticated:
        return Actor(user.pk, user.get_username(), address)
    return Actor(None, "anonymous", address)


@contextmanager
def acting_as(name: str, address: str | None = None) -> Iterator[None]:
    """Changes inside are recorded as made by `name` (e.g. "command:add_account") from
    `address` (this host's name when not given)."""
    token = _origin.set(Origin(actor=Actor(None, name, address or host_name())))
    try:
        yield
    finally:
        _origin.reset(token)


class AuditMiddleware:
    """Changes made while a request is answered are recorded as its user's, from its
    client's address. After the authentication middleware."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        token = _origin.set(Origin(request=request))
        try:
            return self.get_response(request)
        finally:
            _origin.reset(token)
