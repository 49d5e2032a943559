"""Seam-shaped API errors raised by the handlers and rendered by the app in one place."""

from __future__ import annotations

from typing import Any

# Seam documents only "429 Too Many Requests"; no source names the error type. Seam's other
# types are the snake_cased reason phrase (`unauthorized`, `method_not_allowed`), hence this.
RATE_LIMIT_ERROR_TYPE = "too_many_requests"


class SeamError(Exception):
    """An error answered as `{"error": {"type", "message", "validation_errors"?}, "ok": false}`."""

    def __init__(
        self,
        status: int,
        type_: str,
        message: str,
        *,
        validation_errors: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.type = type_
        self.message = message
        self.validation_errors = validation_errors
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"type": self.type, "message": self.message}
        if self.validation_errors is not None:
            error["validation_errors"] = self.validation_errors
        return {"error": error, "ok": False}


def invalid_input(field: str, message: str) -> SeamError:
    """A 400 with zod-style `validation_errors`, as Seam's API renders them."""
    return SeamError(
        400,
        "invalid_input",
        f"{field}: {message}",
        validation_errors={"_errors": [], field: {"_errors": [message]}},
    )


def device_not_found(device_id: str) -> SeamError:
    return SeamError(404, "device_not_found", f"Device not found: {device_id}")


def access_code_not_found(ident: str) -> SeamError:
    return SeamError(404, "access_code_not_found", f"Access code not found: {ident}")


def duplicate_access_code(device_id: str) -> SeamError:
    return SeamError(
        409, "duplicate_access_code", f"An access code with this code already exists on {device_id}"
    )


def code_constraints_violated(device_id: str, lengths: list[int]) -> SeamError:
    """A PIN the lock cannot take. Seam documents no HTTP type for it; the sandbox answers 400
    with the name of Seam's access-code error for the same cause."""
    allowed = ", ".join(str(n) for n in lengths)
    return SeamError(
        400,
        "code_constraints_violated",
        f"The code does not fit {device_id}'s constraints (code lengths {allowed})",
    )


def empty_backup_pool(message: str) -> SeamError:
    """No backup to pull. Seam documents no HTTP answer for it (its spec lists 200/400/401);
    the sandbox answers 400 with the name of Seam's device error for an empty pool."""
    return SeamError(400, "empty_backup_access_code_pool", message)


class DroppedConnection(ConnectionResetError):
    """Raised by the app to drop the connection; `server.py` turns it into a closed socket."""
