"""Fast bulk seeding of jobs and snapshots, for the large benchmark and the retention tests.

The ORM's bulk_create builds a model instance per row and prepares each value through
its field; at millions of rows that is most of the time. Here rows are plain tuples in
the tables' column order, already in the database's own format, written with COPY on
PostgreSQL and with executemany inside large transactions on SQLite. The secondary
indexes of both tables are dropped during the load and rebuilt once afterwards (one
sorted build instead of millions of random inserts), through the schema editor so the
rebuilt indexes are exactly the migrations' ones.

The data are deterministic (the same on every run and every database) and shaped like
production: jobs of every registered provider and kind spread over accounts, mostly
succeeded, some failed, partly failed, running or queued, created over the last
`days` days, with 1 to 9 snapshots each (5 on average) observed over the job's life.
One small account holds `small_jobs` jobs, for baselines measured in the same database.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.db import connection, transaction

STATUSES = (
    # (normalized status, share in 1000, terminal)
    ("succeeded", 700, True),
    ("failed", 50, True),
    ("partially_failed", 50, True),
    ("cancelled", 20, True),
    ("expired", 40, True),
    ("running", 80, False),
    ("queued", 60, False),
)
CHUNK = 20_000


@dataclass
class SeedResult:
    accounts: list[int]
    small_account: int
    jobs: int
    snapshots: int
    seconds: float
    now: datetime


def _status_table() -> list[tuple[str, bool]]:
    table: list[tuple[str, bool]] = []
    for status, share, terminal in STATUSES:
        table.extend([(status, terminal)] * share)
    return table


def _provider_kinds() -> list[tuple[str, list[str]]]:
    from providers import PROVIDER_CLASSES, get_provider

    return [(slug, [kind.name for kind in get_provider(slug).kinds]) for slug in PROVIDER_CLASSES]


def create_accounts(count: int) -> tuple[list[int], int]:
    """`count` accounts spread over the providers, plus the small baseline account."""
    from jobcenter.models import ProviderAccount

    providers = [slug for slug, _ in _provider_kinds()]
    ids = []
    for n in range(count + 1):
        provider = providers[n % len(providers)]
        account = ProviderAccount(
            name=f"bench {provider} {n}" if n < count else "bench small",
            provider=provider,
            enabled=False,  # never synced by a cluster that happens to run on this database
        )
        account.set_credentials(
            {field.name: f"bench-secret-{n}" for field in account.provider_class.credential_fields}
        )
        account.save()
        ids.append(account.pk)
    return ids[:-1], ids[-1]


class Formats:
    """Values as each database takes them in bulk: SQLite text and 0/1, PostgreSQL COPY.

    Times are handled as integer Unix seconds and formatted from a per-day cache: the
    seeder formats tens of millions of them, and strftime would be most of its time.
    """

    def __init__(self, vendor: str) -> None:
        self.sqlite = vendor == "sqlite"
        # Django's SQLite backend stores naive UTC text; PostgreSQL takes the offset.
        self.suffix = "" if self.sqlite else "+00:00"
        self.days: dict[int, str] = {}

    def time(self, epoch: int | None) -> str | None:
        if epoch is None:
            return None
        day, second = divmod(epoch, 86_400)
        date = self.days.get(day)
        if date is None:
            date = self.days[day] = datetime.fromtimestamp(day * 86_400, UTC).strftime("%Y-%m-%d")
        hour, rest = divmod(second, 3600)
        minute, sec = divmod(rest, 60)
        return f"{date} {hour:02d}:{minute:02d}:{sec:02d}{self.suffix}"

    def flag(self, value: bool) -> Any:
        return int(value) if self.sqlite else value


def _payload(external_id: str, kind: str, status: str, total: int, done: int, failed: int) -> str:
    """The raw provider JSON, compact (ids and kinds hold no characters JSON escapes)."""
    return (
        f'{{"id":"{external_id}","type":"{kind}","attributes":{{"status":"{status}",'
        f'"total_count":{total},"completed_count":{done},"failed_count":{failed}}}}}'
    )


def snapshot_count(job_id: int) -> int:
    """1 to 9 snapshots per job, 5 on average."""
    return 1 + (job_id * 2_654_435_761 >> 7) % 9


@dataclass(slots=True)
class JobFacts:
    account: int
    provider: str
    kind: str
    external_id: str
    status: str
    terminal: bool
    created: int  # Unix seconds
    duration: int
    total: int
    done: int
    failed: int
    mix: int

    @property
    def finished(self) -> int | None:
        return self.created + self.duration if self.terminal else None


def generate(
    *,
    jobs: int,
    accounts: Sequence[int],
    small_account: int,
    small_jobs: int,
    now: datetime,
    days: int,
    vendor: str,
    job_columns: Sequence[str],
    snapshot_columns: Sequence[str],
    max_snapshots: int | None = None,
) -> tuple[Iterator[tuple], Callable[[], Iterator[tuple]]]:
    """Row iterators for the job table and (run after it) the snapshot table."""
    fmt = Formats(vendor)
    statuses = _status_table()
    provider_kinds = _provider_kinds()
    # Account -> (provider, kinds); accounts were created round-robin over providers.
    account_provider = {
        account: provider_kinds[n % len(provider_kinds)] for n, account in enumerate(accounts)
    }
    small_provider = provider_kinds[len(accounts) % len(provider_kinds)]
    now_epoch = int(now.timestamp())
    span = days * 86_400
    extra_job = _extra_defaults("job", job_columns)
    extra_snap = _extra_defaults("snapshot", snapshot_columns)
    job_order = [(c, extra_job.get(c)) for c in job_columns]
    snap_order = [(c, extra_snap.get(c)) for c in snapshot_columns]

    def facts(i: int) -> JobFacts:
        """Everything about job `i` (1-based id), derived from its id alone."""
        mix = (i * 2_654_435_761) & 0xFFFFFFFF
        if i <= small_jobs:
            account, (provider, kinds) = small_account, small_provider
        else:
            account = accounts[mix % len(accounts)]
            provider, kinds = account_provider[account]
        status, terminal = statuses[(mix >> 4) % len(statuses)]
        # Spread over `days`, older ids older, with jitter: ids follow time roughly, as
        # they do when a sync inserts jobs as they appear.
        created = now_epoch - int(span * (1 - i / (jobs + 1))) - (mix % 3600)
        total = 10 + (mix >> 3) % 50_000
        if status == "failed":
            failed = total
        elif status == "partially_failed":
            failed = 1 + mix % max(1, total // 10)
        else:
            failed = 0
        if status in ("succeeded", "partially_failed", "failed"):
            done = total
        else:
            done = total * ((mix >> 5) % 100) // 100
        return JobFacts(
            account=account,
            provider=provider,
            kind=kinds[(mix >> 8) % len(kinds)],
            external_id=f"{i:08x}-{mix & 0xFFFF:04x}-4{mix >> 20 & 0xFFF:03x}-8000-{i * 7919:012x}",
            status=status,
            terminal=terminal,
            created=created,
            duration=30 + (mix >> 12) % 7200,
            total=total,
            done=done,
            failed=failed,
            mix=mix,
        )

    def job_rows() -> Iterator[tuple]:
        t = fmt.time
        now_text = t(now_epoch)
        for i in range(1, jobs + 1):
            f = facts(i)
            finished = f.finished
            last = min(now_epoch, finished or f.created + f.duration // 2)
            values = {
                "id": i,
                "account_id": f.account,
                "provider": f.provider,
                "kind": f.kind,
                "external_id": f.external_id,
                "status": f.status,
                "provider_status": f.status.upper(),
                "total_count": f.total,
                "completed_count": f.done,
                "failed_count": f.failed,
                "created_at": t(f.created),
                "started_at": t(f.created + 5),
                "completed_at": t(finished),
                "updated_at": t(last),
                "expires_at": t(f.created + 30 * 86_400),
                "first_seen_at": t(f.created + 60),
                "last_seen_at": now_text,
                "last_changed_at": t(last),
                "last_checked_at": now_text,
                "is_terminal": fmt.flag(f.terminal),
                "gone_at": None,
                "gone_reason": "",
                "tracked": fmt.flag(f.provider == "fullstory"),
                "errors_fetched_at": t(last) if f.failed else None,
                "error_count": 0,
                "payload": _payload(f.external_id, f.kind, f.status, f.total, f.done, f.failed),
                "digest": f"{f.mix:016x}{i:048x}",
            }
            yield tuple(values.get(c, default) for c, default in job_order)

    def snapshot_rows() -> Iterator[tuple]:
        t = fmt.time
        snapshot_id = 0
        for i in range(1, jobs + 1):
            f = facts(i)
            count = snapshot_count(i)
            step = f.duration / count
            for n in range(count):
                if max_snapshots is not None and snapshot_id >= max_snapshots:
                    return
                snapshot_id += 1
                if n == count - 1:
                    status, done, failed = f.status, f.done, f.failed
                else:
                    status, done, failed = (
                        ("queued" if n == 0 else "running"),
                        f.total * n // count,
                        0,
                    )
                values = {
                    "id": snapshot_id,
                    "job_id": i,
                    "observed_at": t(min(now_epoch, f.created + 60 + int(step * n))),
                    "status": status,
                    "provider_status": status.upper(),
                    "total_count": f.total,
                    "completed_count": done,
                    "failed_count": failed,
                    "payload": _payload(f.external_id, f.kind, status, f.total, done, failed),
                    "digest": f"{n:016x}{i:048x}",
                }
                yield tuple(values.get(c, default) for c, default in snap_order)

    return job_rows(), snapshot_rows


def _extra_defaults(which: str, columns: Sequence[str]) -> dict[str, Any]:
    """Database values for columns added to the models after this seeder was written."""
    from jobcenter.models import Job, JobSnapshot

    model = Job if which == "job" else JobSnapshot
    by_column = {f.column: f for f in model._meta.concrete_fields}
    return {
        column: by_column[column].get_db_prep_save(by_column[column].get_default(), connection)
        for column in columns
    }


def _columns(model: Any) -> list[str]:
    return [f.column for f in model._meta.concrete_fields]


def _write(table: str, columns: Sequence[str], rows: Iterator[tuple]) -> int:
    """COPY on PostgreSQL; executemany in transactions of CHUNK rows on SQLite."""
    count = 0
    if connection.vendor == "postgresql":
        quoted = ", ".join(connection.ops.quote_name(c) for c in columns)
        with connection.cursor() as cursor:
            raw = cursor.cursor  # the psycopg cursor under Django's wrapper
            with raw.copy(f"COPY {connection.ops.quote_name(table)} ({quoted}) FROM STDIN") as cp:
                for row in rows:
                    cp.write_row(row)
                    count += 1
        return count
    placeholders = ", ".join("?" for _ in columns)
    # Table and column names come from the models' meta; every value is a parameter.
    sql = f'INSERT INTO "{table}" ({", ".join(columns)}) VALUES ({placeholders})'  # noqa: S608
    raw_connection = connection.connection
    while True:
        chunk = [row for _, row in zip(range(CHUNK), rows, strict=False)]
        if not chunk:
            return count
        # Django keeps sqlite3 in autocommit: without BEGIN each row would commit.
        raw_connection.execute("BEGIN IMMEDIATE")
        raw_connection.executemany(sql, chunk)
        raw_connection.execute("COMMIT")
        count += len(chunk)


def _secondary_indexes(models: Sequence[Any]) -> list[tuple[Any, Any]]:
    return [(model, index) for model in models for index in model._meta.indexes]


def seed(
    jobs: int,
    *,
    accounts: int = 20,
    small_jobs: int = 1_000,
    days: int = 365,
    max_snapshots: int | None = None,
    now: datetime | None = None,
    drop_indexes: bool = True,
    log: Callable[[str], None] = lambda line: None,
) -> SeedResult:
    """Seed `jobs` jobs (about 5 snapshots each, at most `max_snapshots`) into empty tables."""
    from jobcenter.models import Job, JobSnapshot

    started = time.perf_counter()
    now = (now or datetime.now(UTC)).replace(microsecond=0)
    if Job.objects.exists():
        raise RuntimeError("seed() expects an empty job table")
    account_ids, small = create_accounts(accounts)
    job_columns, snapshot_columns = _columns(Job), _columns(JobSnapshot)
    job_rows, snapshot_rows = generate(
        jobs=jobs,
        accounts=account_ids,
        small_account=small,
        small_jobs=min(small_jobs, jobs),
        now=now,
        days=days,
        vendor=connection.vendor,
        job_columns=job_columns,
        snapshot_columns=snapshot_columns,
        max_snapshots=max_snapshots,
    )
    indexes = _secondary_indexes([Job, JobSnapshot]) if drop_indexes else []
    sqlite = connection.vendor == "sqlite"
    if sqlite:
        connection.ensure_connection()
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA synchronous=OFF")
            cursor.execute("PRAGMA cache_size=-262144")  # 256 MiB
    if indexes:
        with connection.schema_editor(atomic=not sqlite) as editor:
            for model, index in indexes:
                editor.remove_index(model, index)
    if not sqlite:
        with connection.cursor() as cursor:
            cursor.execute("SET maintenance_work_mem = '512MB'")
    with transaction.atomic() if not sqlite else _no_transaction():
        job_count = _write(Job._meta.db_table, job_columns, job_rows)
        log(f"  {job_count:,} jobs written in {time.perf_counter() - started:.0f}s")
        snapshot_count_ = _write(JobSnapshot._meta.db_table, snapshot_columns, snapshot_rows())
        log(f"  {snapshot_count_:,} snapshots written in {time.perf_counter() - started:.0f}s")
    if indexes:
        with connection.schema_editor(atomic=not sqlite) as editor:
            for model, index in indexes:
                editor.add_index(model, index)
        log(f"  indexes rebuilt in {time.perf_counter() - started:.0f}s")
    with connection.cursor() as cursor:
        for sql in connection.ops.sequence_reset_sql(_no_style(), [Job, JobSnapshot]):
            cursor.execute(sql)
        cursor.execute("ANALYZE")
        if sqlite:
            cursor.execute("PRAGMA synchronous=NORMAL")
    return SeedResult(
        accounts=account_ids,
        small_account=small,
        jobs=job_count,
        snapshots=snapshot_count_,
        seconds=time.perf_counter() - started,
        now=now,
    )


class _no_transaction:
    """SQLite commits per chunk itself (one giant transaction would hold the WAL)."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _no_style() -> Any:
    from django.core.management.color import no_style

    return no_style()
