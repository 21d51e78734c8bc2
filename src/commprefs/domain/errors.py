"""Domain errors. Each carries what an adapter needs to answer; none knows about HTTP."""


class DomainError(Exception):
    """A request the rules refuse. `field` names the input at fault, if one is."""

    field: str | None = None

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if field is not None:
            self.field = field


class InvalidEmail(DomainError):
    field = "emailAddress"

    def __init__(self, raw: str, field: str | None = None) -> None:
        super().__init__(f"{raw!r} is not a valid email address", field)
        self.raw = raw


class NotFound(DomainError):
    """The thing named does not exist in the caller's portal."""


class RuleViolation(DomainError):
    """The change contradicts the consent rules (already unsubscribed, missing legal basis...)."""


class Conflict(DomainError):
    """The change collides with existing data (a duplicate name or id)."""


class KeyReused(DomainError):
    """An idempotency key sent again with another request."""

    def __init__(self) -> None:
        super().__init__("This Idempotency-Key was already used with a different request")
