"""The audit log: who changed what staff configure, when, from where, and how.

- `context`: the actor of the changes being made (a request's user and client address,
  or a command's name and host), set by `AuditMiddleware` and by `acting_as()`;
- `recorder`: which models and fields are audited, and the signals that write one
  append-only `AuditRecord` (`jobcenter.models.audit`) per change;
- `export`: the records as a CSV download (the admin's "Export (CSV)"), written by
  `jobcenter.exports`.

The admin list (superusers only) is `jobcenter.admin.audit`; docs/operations.md says
what is recorded.
"""
