"""API tokens: django-rest-knox's hashed token, with a name and the time it was last used.

Only the SHA-512 digest of a token and its first characters (`token_key`, for the
lookup) are stored: the key itself is shown once, when it is made
(`jobcenter.tokens.create_token`), and cannot be read back. `KNOX_TOKEN_MODEL` names
this model, so knox's authentication looks tokens up here.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.db import models
from django.utils import timezone
from knox.models import AbstractAuthToken
from knox.settings import CONSTANTS

# How stale `last_used_at` may get: one write per token per minute at most, so a busy
# client does not turn every read into a write.
LAST_USED_RESOLUTION = timedelta(minutes=1)


class ApiToken(AbstractAuthToken):
    # An integer key for admin URLs, the audit log and revocation: knox's primary key is
    # the digest, which nothing should show.
    id = models.BigAutoField(primary_key=True)
    digest = models.CharField(max_length=CONSTANTS.DIGEST_LENGTH, unique=True, editable=False)
    token_key = models.CharField(
        max_length=CONSTANTS.MAXIMUM_TOKEN_PREFIX_LENGTH + CONSTANTS.TOKEN_KEY_LENGTH,
        db_index=True,
        editable=False,
    )
    name = models.CharField(max_length=100, help_text="What the token is for, e.g. 'CI exports'.")
    last_used_at = models.DateTimeField("last used", null=True, blank=True, editable=False)

    class Meta:
        verbose_name = "API token"
        ordering = ["-created", "-id"]

    def __str__(self) -> str:
        # Never the digest (knox's own __str__ shows it): admin history records this text.
        return f"{self.name} ({self.user})"

    def is_expired(self, now: datetime | None = None) -> bool:
        return self.expiry is not None and self.expiry <= (now or timezone.now())

    def touch(self, now: datetime | None = None) -> None:
        """Record a use, at most once per LAST_USED_RESOLUTION (one conditional UPDATE).

        The condition sits in the UPDATE as well, so concurrent requests write once.
        """
        now = now or timezone.now()
        stale = now - LAST_USED_RESOLUTION
        if self.last_used_at is not None and self.last_used_at > stale:
            return
        fresh = models.Q(last_used_at__isnull=True) | models.Q(last_used_at__lte=stale)
        ApiToken.objects.filter(fresh, pk=self.pk).update(last_used_at=now)
        self.last_used_at = now
