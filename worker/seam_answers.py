"""Seam's HTTP answers read in one place: bodies, paging, Retry-After, errors, models.

Every error answer is mapped to `worker.errors` here (`raise_for_answer`), and only here; every
body we rely on is validated into `worker.seam_models`, or a SeamProtocolError says what is off.
"""

from __future__ import annotations

import email.utils
import json
import math
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
from pydantic import ValidationError

from worker.errors import (
    SeamClientError,
    SeamConflict,
    SeamInvalidInput,
    SeamNotFound,
    SeamProtocolError,
    SeamRateLimited,
    SeamUnauthorized,
    SeamUnavailable,
    SeamWorkspaceError,
)
from worker.seam_models import AccessCode, Device, GeneratedCode

M = TypeVar("M", AccessCode, Device, GeneratedCode)

# The longest pause a Retry-After may ask for (seconds); longer ones are cut to it.
RETRY_AFTER_MAX = 300.0

_BY_STATUS: dict[int, type[SeamClientError]] = {
    400: SeamInvalidInput,
    404: SeamNotFound,
    409: SeamConflict,
}


def request_id(response: httpx.Response) -> str | None:
    value: str | None = response.headers.get("seam-request-id")
    return value


def json_body(response: httpx.Response, route: str) -> dict[str, Any] | None:
    try:
        body = json.loads(response.content) if response.content else None
    except (ValueError, UnicodeDecodeError):
        return None
    return body if isinstance(body, dict) else None


def next_page_cursor(body: dict[str, Any], route: str) -> str | None:
    """The cursor of the next page, or None for the last one (no `pagination`: one page)."""
    pagination = body.get("pagination")
    if pagination is None:
        return None  # Seam's fake does not page
    if not isinstance(pagination, dict):
        raise SeamProtocolError("'pagination' is not an object", route=route)
    if not pagination.get("has_next_page"):
        return None
    cursor = pagination.get("next_page_cursor")
    if not isinstance(cursor, str) or not cursor:
        raise SeamProtocolError("has_next_page without a next_page_cursor", route=route)
    return cursor


def retry_after(response: httpx.Response) -> float | None:
    """Seconds to wait, from `Retry-After` as seconds or an HTTP-date; None if absent or unreadable.

    An HTTP-date is read against the answer's own `Date` (Seam's clock, not ours), and every
    value is clamped to RETRY_AFTER_MAX: a typo or `inf` from a proxy must not pause the
    workspace for ever.
    """
    value = (response.headers.get("retry-after") or "").strip()
    if not value:
        return None
    seconds: float | None
    try:
        seconds = float(value)
    except ValueError:
        seconds = _seconds_until(value, response.headers.get("date"))
    if seconds is None or math.isnan(seconds):
        return None
    return min(max(0.0, seconds), RETRY_AFTER_MAX)


def _seconds_until(http_date: str, answered: str | None) -> float | None:
    try:
        at = email.utils.parsedate_to_datetime(http_date)
        now = email.utils.parsedate_to_datetime(answered) if answered else datetime.now(UTC)
    except (TypeError, ValueError, IndexError):
        return None
    if at.tzinfo is None or now.tzinfo is None:  # "-0000": a date in UTC, RFC 5322 says
        at, now = at.replace(tzinfo=at.tzinfo or UTC), now.replace(tzinfo=now.tzinfo or UTC)
    return (at - now).total_seconds()


def raise_for_answer(response: httpx.Response, body: dict[str, Any] | None, route: str) -> None:
    """Map one error answer to our exception tree. The only place that does so."""
    error = body.get("error") if body else None
    error = error if isinstance(error, dict) else {}
    status = response.status_code
    kw: dict[str, Any] = {
        "status": status,
        "error_type": str(error.get("type")) if error.get("type") else None,
        "request_id": request_id(response),
        "route": route,
    }
    message = str(error.get("message") or response.reason_phrase or "error")[:500]
    if status == 429:
        raise SeamRateLimited(message, retry_after=retry_after(response), **kw)
    if status >= 500 or status == 408:
        raise SeamUnavailable(message, **kw)
    if status in (401, 403):  # the key, not the stay: every request fails until it is fixed
        raise SeamUnauthorized(f"Seam refused the API key ({status}): check SEAM_API_KEY", **kw)
    if 300 <= status < 400:  # follow_redirects=False: usually an http:// endpoint
        host = urlsplit(response.headers.get("location", "")).hostname
        to = f"https://{host}" if host else "Seam's https:// address"
        where = f" to {host}" if host else ""
        raise SeamWorkspaceError(
            f"Seam answered a redirect{where}: SEAM_ENDPOINT should be {to}", **kw
        )
    raise _BY_STATUS.get(status, SeamClientError)(message, **kw)


def parse(model: type[M], body: dict[str, Any], field: str, route: str) -> M:
    return parse_item(model, body.get(field), route, field)


def parse_item(model: type[M], item: Any, route: str, field: str = "item") -> M:
    if not isinstance(item, dict):
        raise SeamProtocolError(f"answer lacks the object '{field}'", route=route)
    try:
        return model.model_validate(item)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise SeamProtocolError(f"unexpected '{field}' shape ({problems})", route=route) from None
