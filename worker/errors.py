"""The one exception tree of codeprov.

    CodeprovError
    ├── InvalidInput                  bad payload, CLI input or configuration (never retried)
    ├── RateLimitWait                 our shared limiter says "not before retry_at" (retryable)
    └── SeamError                     anything Seam answered or failed to answer
        ├── SeamTransientError        retryable: the same request may succeed later
        │   ├── SeamUnavailable       HTTP 5xx / 408
        │   ├── SeamRateLimited       HTTP 429, with Retry-After when Seam sent one
        │   ├── SeamConnectionError   connect/read failure, reset, timeout
        │   └── SeamProtocolError     an answer that is not JSON or lacks the fields we need
        ├── SeamWorkspaceError        retryable: Seam refuses every request of this workspace
        │   │                         until an operator fixes the configuration (a 3xx redirect)
        │   └── SeamUnauthorized      401 / 403: the API key was revoked, rotated or is wrong
        └── SeamClientError           HTTP 4xx: retrying the same request cannot help
            ├── SeamInvalidInput      400
            ├── SeamNotFound          404
            └── SeamConflict          409 (e.g. duplicate_access_code: PIN already on the device)

HTTP answers are mapped to this tree in exactly one place, `worker.seam_answers.raise_for_answer`.
Every SeamError keeps Seam's `seam-request-id` so an operator can quote it to Seam support.
No message here ever includes the API key: errors are built from status, type and Seam's message.
"""

from __future__ import annotations

from typing import ClassVar


class CodeprovError(Exception):
    """Base of every error codeprov raises on purpose."""

    retryable: ClassVar[bool] = False


class InvalidInput(CodeprovError):
    """Input a person must fix: a payload, a CLI argument, a configuration value."""


class RateLimitWait(CodeprovError):
    """The shared limiter has no token soon enough to wait for it in the job."""

    retryable = True

    def __init__(self, scope: str, retry_after: float) -> None:
        super().__init__(f"rate limit for {scope}: next request allowed in {retry_after:.2f}s")
        self.scope = scope
        self.retry_after = retry_after


class SeamError(CodeprovError):
    """Seam answered with an error, or did not answer usefully."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        error_type: str | None = None,
        request_id: str | None = None,
        route: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.error_type = error_type
        self.request_id = request_id
        self.route = route

    def __str__(self) -> str:
        parts = [self.message]
        if self.route:
            parts.append(f"route={self.route}")
        if self.status is not None:
            parts.append(f"status={self.status}")
        if self.error_type:
            parts.append(f"type={self.error_type}")
        if self.request_id:
            parts.append(f"seam_request_id={self.request_id}")
        return " ".join(parts)


class SeamTransientError(SeamError):
    retryable = True


class SeamUnavailable(SeamTransientError):
    """Seam answered 5xx or 408."""


class SeamRateLimited(SeamTransientError):
    """Seam answered 429; retry_after is Seam's Retry-After in seconds, if it sent one."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: object) -> None:
        super().__init__(message, **kw)  # type: ignore[arg-type]
        self.retry_after = retry_after


class SeamConnectionError(SeamTransientError):
    """No usable answer at the transport level: refused, reset, timed out."""


class SeamProtocolError(SeamTransientError):
    """Seam's answer was not JSON, or lacked a field we rely on."""


class SeamWorkspaceError(SeamError):
    """Every request of the workspace fails until a person fixes SEAM_API_KEY or SEAM_ENDPOINT.

    Not the stay's fault: stays wait (with backoff, until their deadline) instead of failing,
    so a key fixed within the deadline saves all of them.
    """

    retryable = True


class SeamUnauthorized(SeamWorkspaceError):
    """Seam answered 401 or 403: it refuses the API key."""


class SeamClientError(SeamError):
    """A 4xx answer: the same request will fail again."""


class SeamInvalidInput(SeamClientError):
    pass


class SeamNotFound(SeamClientError):
    pass


class SeamConflict(SeamClientError):
    pass
