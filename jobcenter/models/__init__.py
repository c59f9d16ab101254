"""The data model, one module per area; every model is importable from `jobcenter.models`.

- `accounts`: provider accounts (credentials encrypted, sync state), rate-limit buckets;
- `jobs`: jobs, their snapshots (history), error records, sync runs;
- `alerts`: alert channels, rules, the event ledger, deliveries;
- `tokens`: API tokens (hashed, named, expiring; django-rest-knox);
- `teams`: teams and their members (who sees which accounts: `jobcenter.queries.scoping`);
- `audit`: the append-only audit log (written by `jobcenter.audit`).

Nothing here knows any provider's JSON. Migrations name `jobcenter.models._provider_choices`.
"""

from jobcenter.models.accounts import (
    AccountStatus,
    DispatchBaton,
    ProviderAccount,
    RateLimitBucket,
    _provider_choices,
)
from jobcenter.models.alerts import (
    AlertChannel,
    AlertChannelKind,
    AlertDelivery,
    AlertDeliveryStatus,
    AlertEvent,
    AlertEventState,
    AlertEventType,
    AlertRule,
)
from jobcenter.models.audit import AppendOnlyError, AuditAction, AuditRecord
from jobcenter.models.jobs import Job, JobError, JobSnapshot, SyncOutcome, SyncRun, SyncTrigger
from jobcenter.models.teams import Team, TeamMembership
from jobcenter.models.tokens import ApiToken

__all__ = [
    "AccountStatus",
    "AlertChannel",
    "AlertChannelKind",
    "AlertDelivery",
    "AlertDeliveryStatus",
    "AlertEvent",
    "AlertEventState",
    "AlertEventType",
    "AlertRule",
    "ApiToken",
    "AppendOnlyError",
    "AuditAction",
    "AuditRecord",
    "DispatchBaton",
    "Job",
    "JobError",
    "JobSnapshot",
    "ProviderAccount",
    "RateLimitBucket",
    "SyncOutcome",
    "SyncRun",
    "SyncTrigger",
    "Team",
    "TeamMembership",
    "_provider_choices",
]
