"""Fullstory Server API v2 batch imports (events and users).

The API as specified: tests/specs/fullstory-batch.openapi.json.

Fullstory has no list of batch jobs: the only source of a job id is the answer to the
create request, so Job Center tracks ids registered by whoever created the batches and
polls each one until it ends. Both kinds are therefore not listable and `iter_pages`
yields nothing.

Facts this module leans on:
- `Authorization: Basic <API key>`, the key as is (not base64), as Fullstory's own SDK
  sends it. Reading results needs an Admin or Architect key.
- `GET /v2/{events|users}/batch/{id}` answers `{imports, errors, job}`; `errors` is left
  out when nothing failed (the field's description says so), so a missing count is 0.
- `FAILED` covers partial failure: the counts tell partly from wholly failed.
- `/errors` answers 202 with no body while the batch is processing; afterwards it pages
  with `next_page_token` until that comes back absent or empty.
- Every error answer is `{message, code}`; 429 carries Retry-After in seconds (the
  HttpClient waits short ones out and raises RateLimited for long ones).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar
from urllib.parse import quote

import requests

from providers.base import (
    CredentialField,
    CursorGuard,
    JobErrorRecord,
    JobKind,
    JobPage,
    JobRecord,
    PersonalData,
    Provider,
    Status,
    status_from_counts,
)
from providers.errors import AccessDenied, AuthError, BadResponse, NotFound, NotReady
from providers.http import RateLimit

EVENTS = "events-batch-import"
USERS = "users-batch-import"
# Job kind -> the path segment of its endpoints.
SEGMENTS: dict[str, str] = {EVENTS: "events", USERS: "users"}
# An id no batch can have: a 404 for it proves the key was accepted (see check_credentials).
CREDENTIAL_PROBE_ID = "jobcenter-credential-check"
# What of an error result is the failed object itself, as it was sent: an event (with the
# batch's `shared` part) or a user; and the fields read from it (the user's id, and a
# user's name or email as the title). Fullstory's message and code say what went wrong.
EVENT_PERSONAL_DATA = PersonalData(raw_paths=(("event",), ("shared",)), fields=("external_id",))
USER_PERSONAL_DATA = PersonalData(raw_paths=(("user",),), fields=("title", "external_id"))


def map_status(provider_status: str, imports: int, errors: int) -> Status:
    """Normalized status of a batch from its status and counts.

    FAILED covers partial failure, so the counts decide between failed and partially
    failed; a FAILED with no failures counted is taken at its word. COMPLETED means no
    errors; should one ever report some, the counts win so staff still see the failures.
    """
    value = provider_status.strip().upper()
    if value == "PROCESSING":
        return Status.RUNNING
    if value == "COMPLETED":
        return status_from_counts(imports + errors, errors)
    if value == "FAILED":
        return status_from_counts(imports + errors, errors) if errors > 0 else Status.FAILED
    return Status.UNKNOWN


def count(body: Mapping[str, Any], name: str) -> int:
    """A count from the status answer: absent means 0; int32 as a number, int64 as a string."""
    value = body.get(name)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise BadResponse(f"Fullstory sent a non-numeric `{name}` count", excerpt=repr(value))
    try:
        number = int(value)
    except ValueError:
        raise BadResponse(
            f"Fullstory sent a non-numeric `{name}` count", excerpt=repr(value)
        ) from None
    if number < 0:
        raise BadResponse(f"Fullstory sent a negative `{name}` count", excerpt=str(number))
    return number


class FullstoryProvider(Provider):
    """Fullstory events and users batch imports, tracked by id."""

    slug = "fullstory"
    label = "Fullstory"
    credential_fields = (CredentialField("api_key", "API key (Admin or Architect)"),)
    # Fullstory routes api.fullstory.com to the org's data center; some EU orgs need the
    # regional host, so it is offered as a choice.
    base_urls: ClassVar[Mapping[str, str]] = {
        "na1": "https://api.fullstory.com",
        "eu1": "https://api.eu1.fullstory.com",
    }
    documented_hosts = frozenset({"api.fullstory.com", "api.eu1.fullstory.com"})
    kinds = (
        JobKind(EVENTS, "Events batch import", listable=False),
        JobKind(USERS, "Users batch import", listable=False),
    )
    # Fullstory publishes no numbers, only "a per-second limit plus a burst limiter". These
    # are conservative (its own SDK polls one batch every 2 s) and match the sandbox.
    rate_limits: ClassVar[Mapping[str, RateLimit]] = {
        "default": RateLimit(((10, 1.0), (50, 10.0))),
    }
    # Times are protobuf JSON (RFC 3339, always with `Z`): naive_times_are_utc stays False,
    # a time without an offset is a malformed answer.

    # -- HTTP hooks -------------------------------------------------------------------
    def auth_headers(self) -> dict[str, str]:
        """`Basic <key>` with the key as is; like the SDK, a value holding a space is
        taken as a whole header value already (someone pasted "Basic na1.xxx")."""
        key = str(self.credentials.get("api_key", "")).strip()
        return {"Authorization": key if " " in key else f"Basic {key}"}

    def default_headers(self) -> dict[str, str]:
        return {"Accept": "application/json", "Content-Type": "application/json"}

    def describe_error(self, response: requests.Response) -> str:
        """`<code>: <message>` from Fullstory's `{message, code}` envelope, else the whole
        body (the client redacts, then cuts)."""
        try:
            body = json.loads(response.content)
        except (ValueError, UnicodeDecodeError):
            return response.text
        if not isinstance(body, dict):
            return response.text
        message = str(body.get("message") or "").strip()
        code = str(body.get("code") or "").strip()
        if code and message:
            return f"{code}: {message}"
        return message or code or response.text

    # -- the calls the sync engine makes ----------------------------------------------
    def check_credentials(self) -> None:
        """Fullstory has no "who am I" endpoint, so ask for a batch that cannot exist.

        A 404 means the key was accepted (401 raises AuthError). The same probe on
        `/errors` then tells whether the key may read results: a Standard key gets 403
        there, raised as AccessDenied with what kind of key is needed.
        """
        if not str(self.credentials.get("api_key", "")).strip():
            raise AuthError("authentication failed: no Fullstory API key is configured")
        path = self._job_path(EVENTS, CREDENTIAL_PROBE_ID)
        self.client.request("GET", path, expect=(200, 404))
        try:
            self.client.request("GET", f"{path}/errors", expect=(200, 202, 404))
        except AccessDenied as exc:
            raise AccessDenied(
                "access denied: this Fullstory API key may start batches but not read their "
                f"results; use an Admin or Architect key ({exc.message})",
                status_code=exc.status_code,
            ) from None

    def iter_pages(self, listing: str, cursor: str | None = None) -> Iterator[JobPage]:
        """Nothing: Fullstory cannot list batch jobs (there is no collection endpoint).

        Batches are tracked by id and refreshed with `fetch_job`; the sync engine never
        asks for these listings because neither kind is listable.
        """
        self.kind(listing)  # an unknown listing is still a KeyError
        yield from ()

    def fetch_job(self, kind: str, external_id: str) -> JobRecord:
        """The batch's status and counts; NotFound (with Fullstory's message) when unknown."""
        path = self._job_path(kind, external_id)
        try:
            body = self.client.request_json("GET", path)
        except NotFound as exc:
            # Name the job, and keep Fullstory's own words ("HTTP 404: <code>: <message>").
            start = exc.message.find("(HTTP ")
            detail = exc.message[start:] if start >= 0 else f"({exc.message})"
            raise NotFound(
                f"Fullstory has no {self.kind(kind).label.lower()} job {external_id!r} {detail}",
                status_code=exc.status_code,
            ) from None
        return self.job_record(kind, body, external_id)

    def iter_errors(self, kind: str, external_id: str) -> Iterator[JobErrorRecord]:
        """Every failed object of an ended batch, page by page.

        Raises NotReady while the batch is still processing (Fullstory answers 202 with no
        body then): errors are only complete once it has ended.
        """
        path = self._job_path(kind, external_id) + "/errors"
        guard = CursorGuard(f"Fullstory {kind} {external_id} errors")
        token: str | None = None
        while True:
            guard.advance(token)
            response = self.client.request(
                "GET",
                path,
                params={"page_token": token} if token else None,
                expect=(200, 202),
                parse_json=True,
            )
            if response.status_code == 202:
                raise NotReady(
                    f"Fullstory is still processing {kind} job {external_id!r}; "
                    "its errors can be read once it has ended",
                    status_code=202,
                )
            body = getattr(response, "parsed", None)
            if not isinstance(body, dict):
                raise BadResponse(
                    "Fullstory's errors page is not a JSON object",
                    excerpt=self.client.excerpt(response.text),
                )
            results = body.get("results") or []
            if not isinstance(results, list):
                raise BadResponse(
                    "Fullstory's errors page has no `results` list",
                    excerpt=self.client.excerpt(response.text),
                )
            for result in results:
                yield self.error_record(kind, result)
            token = body.get("next_page_token") or None
            if token is None:
                return
            if not isinstance(token, str):
                raise BadResponse("Fullstory sent a page token that is not a string")

    # -- JSON to records -------------------------------------------------------------
    def job_record(self, kind: str, body: Any, requested_id: str = "") -> JobRecord:
        """A JobRecord from a `JobStatusResponse`; BadResponse when it is not one."""
        job = body.get("job") if isinstance(body, dict) else None
        if not isinstance(job, dict) or not isinstance(job.get("status"), str):
            raise BadResponse(
                "Fullstory's batch status answer has no `job` with a `status`",
                excerpt=self.client.excerpt(body),
            )
        imports = count(body, "imports")
        errors = count(body, "errors")
        provider_status = job["status"]
        status = map_status(provider_status, imports, errors)
        terminal = status in (Status.SUCCEEDED, Status.PARTIALLY_FAILED, Status.FAILED)
        return JobRecord(
            kind=kind,
            external_id=requested_id or str(job.get("id") or ""),
            status=status,
            provider_status=provider_status,
            raw=body,
            total_count=imports + errors if terminal else None,
            completed_count=imports,
            failed_count=errors,
            created_at=self.read_time(job.get("created"), "job.created"),
            completed_at=self.read_time(job.get("finished"), "job.finished"),
        )

    @staticmethod
    def error_record(kind: str, result: Any) -> JobErrorRecord:
        """One failed event or user; the whole result (with the object) is kept raw."""
        if not isinstance(result, dict):
            raise BadResponse("Fullstory sent an error result that is not an object")
        message = str(result.get("message") or "").strip() or "(Fullstory gave no message)"
        code = str(result.get("code") or "")
        if kind == EVENTS:
            event = result.get("event") if isinstance(result.get("event"), dict) else {}
            user = event.get("user") if isinstance(event.get("user"), dict) else {}
            session = event.get("session") if isinstance(event.get("session"), dict) else {}
            external_id = user.get("uid") or user.get("id") or session.get("id") or ""
            title = str(event.get("name") or "")
            source = "event"
            personal_data = EVENT_PERSONAL_DATA
        else:
            user = result.get("user") if isinstance(result.get("user"), dict) else {}
            external_id = user.get("uid") or user.get("id") or ""
            title = str(user.get("display_name") or user.get("email") or "")
            source = "user"
            personal_data = USER_PERSONAL_DATA
        return JobErrorRecord(
            message=message,
            code=code,
            title=title,
            source=source,
            external_id=str(external_id),
            raw=result,
            personal_data=personal_data,
        )

    def _job_path(self, kind: str, external_id: str) -> str:
        if kind not in SEGMENTS:
            raise KeyError(kind)
        job_id = str(external_id).strip()
        if not job_id:
            raise NotFound("a Fullstory batch job id cannot be empty")
        return f"/v2/{SEGMENTS[kind]}/batch/{quote(job_id, safe='')}"
