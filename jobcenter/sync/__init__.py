"""The sync engine and what it stands on. Read `engine.py` first; it names the others.

- `engine`: `sync_account`, the entry point, and `AccountSync`, one run's passes in order;
- `lease`: one sync of an account at a time, across workers (`Lease`, `LeaseLost`);
- `pages`: a page's records encoded, diffed and written with a constant number of queries;
- `errors`: failed jobs' error records, from payloads or fetched once per job;
- `refresh`: jobs the listings did not return, refreshed by id or marked gone;
- `bookkeeping`: a run's totals and problems, the SyncRun and account status it ends with;
- `bulk`: fast inserts (executemany on SQLite, COPY on PostgreSQL);
- `prefetch`: the next pages fetched in a helper thread while one is written;
- `gcpolicy`: the garbage collector's threshold raised while syncs run;
- `ratelimit`: the token buckets every worker shares;
- `tracking`: registering job ids to poll; `retention`: pruning old snapshots.
"""
