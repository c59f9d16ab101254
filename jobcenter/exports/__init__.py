"""Streaming CSV and NDJSON exports of jobs, snapshots and error records.

One package for the three ways in (the API's /api/v1/exports/, the admin's export links
and actions, `manage.py export_jobs`), so a file looks the same whichever way staff
asked for it, and the filters are the list endpoints' own (`jobcenter.queries.filters`).

- `specs`: what can be exported (EXPORTS), in which formats, who may (can_export,
  EXPORT_PERMISSION), and the filtered rows (filtered, FilterError).
- `columns`: each export's columns and how a cell is written, in Python and in SQL.
- `stream`: rows by keyset chunks, written as blocks of bytes, and the download response.
- `throttle`: the export limit the API and the admin share.

The columns are documented in docs/exports.md; keep the two in step.
"""
