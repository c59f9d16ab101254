"""Which rules apply, to which accounts, when they are quiet, and which channels are valid.

A rule's own fields are checked by `AlertRule.clean` (they need nothing but the rule);
a channel needs the secret typed in the admin form, so its check lives here.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db.models import Exists, OuterRef, Q, QuerySet

from jobcenter.alerts.webhooks import signing_key, validate_webhook_url
from jobcenter.models import AlertChannel, AlertChannelKind, AlertRule, ProviderAccount, Team
from jobcenter.queries.scoping import in_team

MIN_SECRET_LENGTH = 16


def active_rules(account: ProviderAccount | None) -> list[AlertRule]:
    """Enabled rules with a channel (one query); with `account`, only rules covering it.

    A team's rule covers only the team's accounts, whatever its account list says (the
    account may have moved to another team since).
    """
    through = AlertRule.accounts.through
    rules = AlertRule.objects.filter(enabled=True, channel__isnull=False).select_related("channel")
    if account is not None:
        rules = rules.filter(Q(team__isnull=True) | Q(team_id=account.team_id))
        rules = rules.annotate(
            scoped=Exists(through.objects.filter(alertrule_id=OuterRef("pk"))),
            covers=Exists(
                through.objects.filter(alertrule_id=OuterRef("pk"), provideraccount_id=account.pk)
            ),
        ).filter(Q(scoped=False) | Q(covers=True))
    return list(rules.order_by("id"))


def scoped_accounts(rule: AlertRule) -> QuerySet[ProviderAccount]:
    """The accounts a rule watches, as a lazy queryset (a subquery, not a query).

    A team's rule watches the team's accounts only ("every account" is every account of
    the team); a rule without a team (superusers') may watch any account.
    """
    accounts = in_team(ProviderAccount.objects.all(), rule.team_id)
    through = AlertRule.accounts.through
    accounts = accounts.filter(
        Q(~Exists(through.objects.filter(alertrule_id=rule.pk)))
        | Q(pk__in=through.objects.filter(alertrule_id=rule.pk).values("provideraccount_id"))
    )
    providers = rule.provider_list()
    if providers:
        accounts = accounts.filter(provider__in=providers)
    return accounts


def in_quiet_hours(rule: AlertRule, now: datetime) -> bool:
    """Whether `now` falls in the rule's quiet hours (which may span midnight)."""
    start, end = rule.quiet_start, rule.quiet_end
    if start is None or end is None or start == end:
        return False
    try:
        zone = ZoneInfo(rule.quiet_timezone or settings.TIME_ZONE)
    except (ZoneInfoNotFoundError, ValueError):
        zone = ZoneInfo("UTC")
    local = now.astimezone(zone).time().replace(tzinfo=None)
    if start < end:
        return start <= local < end
    return local >= start or local < end


def validate_rule_team(
    team: Team | None, channel: AlertChannel | None, accounts: Iterable[ProviderAccount]
) -> dict[str, list[str]]:
    """Field errors of a rule's team against its channel and accounts: a team's rule sends
    to a channel of that team and names only its accounts; a rule without a team sends
    to a channel without one (so no team's channel hears of other teams' accounts)."""
    errors: dict[str, list[str]] = {}
    team_id = team.pk if team is not None else None
    if channel is not None and channel.team_id != team_id:
        errors["channel"] = [
            f"Choose a channel of the team {team}." if team else "Choose a channel without a team."
        ]
    if team is not None:
        outside = sorted(a.name for a in accounts if a.team_id != team_id)
        if outside:
            errors["accounts"] = [f"Not accounts of the team {team}: {', '.join(outside)}."]
    return errors


def validate_channel(channel: AlertChannel, secret: str = "") -> dict[str, list[str]]:
    """Field errors of a channel; `secret` is a newly typed one (blank keeps the stored)."""
    errors: dict[str, list[str]] = {}
    if channel.kind == AlertChannelKind.EMAIL:
        recipients = channel.recipient_list()
        if not recipients:
            errors["recipients"] = ["Enter at least one email address."]
        for address in recipients:
            try:
                validate_email(address)
            except ValidationError:
                errors.setdefault("recipients", []).append(f"{address} is not an email address.")
    elif channel.kind == AlertChannelKind.WEBHOOK:
        try:
            channel.url = validate_webhook_url(channel.url)
        except ValidationError as exc:
            errors["url"] = exc.messages
        if not secret and not channel.has_secret:
            errors["secret"] = ["A webhook needs a signing secret."]
        elif secret and len(secret) < MIN_SECRET_LENGTH:
            errors["secret"] = [f"Use at least {MIN_SECRET_LENGTH} characters."]
        elif secret:
            try:
                signing_key(secret)
            except ValueError as exc:
                errors["secret"] = [str(exc)]
    return errors
