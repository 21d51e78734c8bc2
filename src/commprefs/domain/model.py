"""Value types read from and written to the store."""

from dataclasses import dataclass, field

from commprefs.domain.enums import LegalBasis, Scope, Source, Status, WideScope


@dataclass(frozen=True, slots=True)
class Portal:
    id: int
    name: str
    gdpr_enabled: bool
    hubspot_strict: bool
    default_language: str
    public_base_url: str | None
    # Signs the contacts' links; replacing it invalidates every link issued before.
    signing_secret: str = field(default="", repr=False)
    # Keys the tombstones of erased addresses (HMAC-SHA256); never changes, unlike the link secret.
    erasure_salt: str = field(default="", repr=False)


@dataclass(frozen=True, slots=True)
class BusinessUnit:
    portal_id: int
    id: int
    name: str


@dataclass(frozen=True, slots=True)
class Translation:
    language_code: str
    name: str
    description: str
    created_at: int
    updated_at: int


@dataclass(frozen=True, slots=True)
class Definition:
    """A subscription type ("Marketing Information") that contacts opt into or out of."""

    portal_id: int
    id: int
    business_unit_id: int
    name: str
    description: str
    purpose: str
    communication_method: str
    is_active: bool
    is_default: bool
    is_internal: bool
    created_at: int
    updated_at: int
    translations: tuple[Translation, ...] = ()


@dataclass(frozen=True, slots=True)
class StoredStatus:
    """What was last recorded for one subscriber and one subscription."""

    subscription_id: int
    status: Status
    legal_basis: LegalBasis | None
    legal_basis_explanation: str | None
    source: str
    updated_at: int


@dataclass(frozen=True, slots=True)
class WideStatus:
    """An opt-out from all (or its lifting) for the whole portal or one brand."""

    scope: WideScope
    business_unit_id: int
    status: Status
    source: str
    updated_at: int


WideKey = tuple[WideScope, int]


@dataclass(slots=True)
class ConsentEvent:
    """One recorded change of a subscriber's consent: a line of the consent history, with its proof."""

    portal_id: int
    subscriber: str
    channel: str
    old_status: Status
    new_status: Status
    source: str
    occurred_at: int
    subscription_id: int | None = None
    wide_scope: WideScope | None = None
    business_unit_id: int | None = None
    legal_basis: LegalBasis | None = None
    legal_basis_explanation: str | None = None
    actor_token_id: str | None = None
    request_id: str | None = None
    ip: str | None = None
    user_agent: str | None = None
    language: str | None = None
    reason: str | None = None
    # Set when the change came from an import: its id, and when it was recorded (occurred_at is the file's).
    import_id: str | None = None
    recorded_at: int | None = None


@dataclass(slots=True)
class Subscriber:
    """Everything recorded for one address and channel: per-subscription rows and wide rows.

    Mutable on purpose: the consent rules update it in memory while planning a transaction's writes.
    """

    address: str
    statuses: dict[int, StoredStatus] = field(default_factory=dict)
    wide: dict[WideKey, WideStatus] = field(default_factory=dict)
    # Set while the address is erased (a data-subject request): it then reads as opted out of all,
    # and only a new explicit consent lifts that.
    erased_at: int | None = None

    def wide_opt_out(self, business_unit_id: int) -> WideStatus | None:
        """The opt-out from all that covers subscriptions of this brand, if any (portal-wide first)."""
        if not self.wide:  # most subscribers: a batch read asks this for each of their subscriptions
            return None
        for key in ((WideScope.PORTAL_WIDE, 0), (WideScope.BUSINESS_UNIT_WIDE, business_unit_id)):
            row = self.wide.get(key)
            if row is not None and row.status is Status.UNSUBSCRIBED:
                return row
        return None


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """An authenticated caller: the token's id, name, portal and scopes."""

    id: str
    name: str
    portal_id: int
    scopes: frozenset[Scope]


@dataclass(frozen=True, slots=True)
class Actor:
    """Who made a change, recorded with its consent event."""

    source: Source | str
    token_id: str | None = None
    request_id: str | None = None
    ip: str | None = None
    user_agent: str | None = None
    language: str | None = None
    reason: str | None = None


@dataclass(slots=True)
class DeliveryAttempt:
    """One try at sending one event to a webhook endpoint: the delivery log's line."""

    portal_id: int
    endpoint_id: str
    event_id: int
    attempt: int
    status_code: int | None
    error: str | None
    latency_ms: int
    attempted_at: int
    # When the endpoint is tried again, set on the attempt that failed.
    next_attempt_at: int | None = None


@dataclass(frozen=True, slots=True)
class RejectedLine:
    """A line of an import file that was not taken: its number, its address (None where the address was erased:
    a kept row would bring it back), why, and its values as JSON."""

    line: int
    email: str | None
    reason: str
    values_json: str
