"""The default rules `setup_schedules` creates: inactive until someone gives them a channel,
so nobody is mailed before someone chooses where alerts go."""

from __future__ import annotations

from typing import Any

from jobcenter.models import AlertChannel, AlertRule

DEFAULT_RULES: dict[str, dict[str, Any]] = {
    "all-failures": {
        "name": "All job failures",
        "on_job_failed": True,
        "on_job_partially_failed": True,
    },
    "account-failing": {"name": "Accounts failing 3 syncs in a row", "account_failures": 3},
}


def ensure_default_rules() -> list[AlertRule]:
    """The sensible rules, created once (staff edits are kept); inactive until given a channel."""
    rules = []
    for key, fields in DEFAULT_RULES.items():
        rule, _ = AlertRule.objects.get_or_create(default_key=key, defaults=fields)
        rules.append(rule)
    return rules


def use_channel_for_default_rules(channel: AlertChannel) -> int:
    """Give the default rules that have no channel yet this one (the demo's console email)."""
    ensure_default_rules()
    return (
        AlertRule.objects.exclude(default_key="")
        .filter(channel__isnull=True)
        .update(channel=channel)
    )
