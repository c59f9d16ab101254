"""The admin, one module per area; Django's autodiscovery imports this package.

Importing the area modules registers every ModelAdmin: `accounts` (provider accounts),
`jobs` (the job list and page), `snapshots` (snapshots and error records), `runs` (sync
runs), `alerts` (channels, rules, events, deliveries), `audit` (the audit log, for
superusers), `taskqueue` (django-q2's pages, with
what runs code kept for superusers), `teams` (teams and their members),
`tokens` (API tokens, each staff member's own), `users` (users and groups, with what
grants power kept for superusers). Beside them:
`common` (site titles, time columns, the capped paginator, the team scoping of every
area), `filters`, `forms`, `exports` (the export mixin), `display` and `charts` (how
values and the dashboard look), `live` (the live pages' version endpoints). The dashboard at the admin index is
`templates/admin/index.html` over `jobcenter.queries.dashboard`.

Nothing else belongs here: a name bound in this module would be shadowed by the
submodule of the same name (`jobcenter.admin.exports`) once that is imported.
"""

from jobcenter.admin import (
    accounts,
    alerts,
    audit,
    jobs,
    runs,
    snapshots,
    taskqueue,
    teams,
    tokens,
    users,
)

__all__ = [
    "accounts",
    "alerts",
    "audit",
    "jobs",
    "runs",
    "snapshots",
    "taskqueue",
    "teams",
    "tokens",
    "users",
]
