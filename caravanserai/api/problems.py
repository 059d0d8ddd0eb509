"""RFC 9457 problem details and the typed errors every layer raises and maps to them."""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field

PROBLEM_CONTENT_TYPE = "application/problem+json"
PROBLEM_TYPE_BASE = "https://caravanserai.dev/problems/"


class FieldError(BaseModel):
    """One violation: the dotted/indexed path of the field and what is wrong with it."""

    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


class Problem(BaseModel):
    """An RFC 9457 problem document (``application/problem+json``)."""

    model_config = ConfigDict(extra="allow")

    type: str = "about:blank"
    title: str
    status: int
    detail: str = ""
    instance: str | None = None
    errors: list[FieldError] | None = Field(default=None)


class CaravanseraiError(Exception):
    """Base of the typed errors. Each maps to one HTTP status and problem type."""

    status: ClassVar[int] = 500
    title: ClassVar[str] = "Internal Server Error"
    slug: ClassVar[str] = "internal"

    def __init__(self, detail: str = "", errors: list[FieldError] | None = None) -> None:
        super().__init__(detail or self.title)
        self.detail = detail
        self.errors = errors

    def to_problem(self, instance: str | None = None) -> Problem:
        return Problem(
            type=PROBLEM_TYPE_BASE + self.slug,
            title=self.title,
            status=self.status,
            detail=self.detail,
            instance=instance,
            errors=self.errors,
        )

    def __str__(self) -> str:
        text = self.detail or self.title
        if self.errors:
            text += "".join(f"\n  {e}" for e in self.errors)
        return text


class BadRequest(CaravanseraiError):
    status, title, slug = 400, "Bad Request", "bad-request"


class Unauthorized(CaravanseraiError):
    status, title, slug = 401, "Unauthorized", "unauthorized"


class Forbidden(CaravanseraiError):
    status, title, slug = 403, "Forbidden", "forbidden"


class NotFound(CaravanseraiError):
    status, title, slug = 404, "Not Found", "not-found"


class MethodNotAllowed(CaravanseraiError):
    status, title, slug = 405, "Method Not Allowed", "method-not-allowed"


class Conflict(CaravanseraiError):
    """The request conflicts with the current state (stale resourceVersion, bad transition)."""

    status, title, slug = 409, "Conflict", "conflict"


class AlreadyExists(Conflict):
    slug = "already-exists"


class Expired(CaravanseraiError):
    """The requested revision is older than the retained event log: relist."""

    status, title, slug = 410, "Gone", "expired"


class TooLargeResourceVersion(CaravanseraiError):
    """A watch from a revision this server has not reached (it waited a moment for it).

    Kubernetes answers 504 "Too large resource version" with ``Retry-After: 1``; clients
    retry, and an informer relists (after a database failover the revision may never come).
    """

    status, title, slug = 504, "Gateway Timeout", "too-large-resource-version"


class PayloadTooLarge(CaravanseraiError):
    status, title, slug = 413, "Payload Too Large", "payload-too-large"


class UnsupportedMediaType(CaravanseraiError):
    status, title, slug = 415, "Unsupported Media Type", "unsupported-media-type"


class Invalid(CaravanseraiError):
    """The object is well-formed but violates the rules; ``errors`` names every bad field."""

    status, title, slug = 422, "Invalid Object", "invalid"


class Unavailable(CaravanseraiError):
    status, title, slug = 503, "Service Unavailable", "unavailable"


ERRORS_BY_STATUS: dict[int, type[CaravanseraiError]] = {
    cls.status: cls
    for cls in (
        BadRequest, Unauthorized, Forbidden, NotFound, MethodNotAllowed, Conflict, Expired,
        PayloadTooLarge, UnsupportedMediaType, Invalid, Unavailable,
    )
}


def error_from_problem(problem: Problem) -> CaravanseraiError:
    """Rebuild the typed error a problem document stands for (used by the client)."""
    cls = ERRORS_BY_STATUS.get(problem.status, CaravanseraiError)
    if cls is Conflict and problem.type.endswith("/already-exists"):
        cls = AlreadyExists
    if problem.type.endswith("/" + TooLargeResourceVersion.slug):
        cls = TooLargeResourceVersion
    err = cls(problem.detail or problem.title, problem.errors)
    if cls is CaravanseraiError:
        err.status = problem.status  # type: ignore[misc]
    return err
