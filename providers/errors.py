"""The typed errors every provider raises, and the only failures `jobcenter` sees.

Their own module so that `providers.base` (the provider interface) and `providers.http`
(the client it builds) both import them without importing each other.
"""

from __future__ import annotations


class ProviderError(Exception):
    """Base of every error a provider raises; the message is safe to show staff."""

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code

    def __str__(self) -> str:
        return self.message


class AuthError(ProviderError):
    """Credentials were refused. Never retried: staff must fix the account."""


class AccessDenied(AuthError):
    """The credentials work but may not read this resource (HTTP 403, a missing scope)."""


class NotFound(ProviderError):
    """The job (or resource) does not exist at the provider, or no longer does."""


class RateLimited(ProviderError):
    """The provider said to slow down; `retry_after` is in seconds when it said how long."""

    def __init__(
        self, message: str, *, retry_after: float | None = None, status_code: int | None = 429
    ) -> None:
        super().__init__(message, status_code=status_code)
        self.retry_after = retry_after


class TransientError(ProviderError):
    """A 5xx, a network failure or a timeout: worth retrying later."""


class BadResponse(ProviderError):
    """The answer is not what the API documents; `excerpt` keeps the offending part.

    A parser that does not hold the credentials keeps it whole: whoever shows it
    redacts, then cuts it (`providers.redaction.redact_then_cut`), never the reverse.
    """

    def __init__(self, message: str, *, excerpt: str = "", status_code: int | None = None) -> None:
        super().__init__(message, status_code=status_code)
        self.excerpt = excerpt


class BadTime(BadResponse):
    """A time the provider sent that `providers.times.parse_time` cannot read for sure."""


class NotReady(ProviderError):
    """The provider has not finished preparing this (an HTTP 202): ask again later."""


class RequestRejected(ProviderError):
    """The provider refused the request itself (a 4xx other than auth, 404 and 429)."""


class InvalidCursor(BadResponse):
    """A saved page cursor is no longer accepted: the listing must start again."""


__all__ = [
    "AccessDenied",
    "AuthError",
    "BadResponse",
    "BadTime",
    "InvalidCursor",
    "NotFound",
    "NotReady",
    "ProviderError",
    "RateLimited",
    "RequestRejected",
    "TransientError",
]
