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


@dataclass(frozen=True, slots=True)
class Subscriber:
    """Everything recorded for one address: per-subscription rows and wide rows."""

    address: str
    statuses: dict[int, StoredStatus] = field(default_factory=dict)
    wide: tuple[WideStatus, ...] = ()

    def wide_opt_out(self, business_unit_id: int) -> WideScope | None:
        """Which opt-out from all covers subscriptions of this brand, if any (portal-wide first)."""
        for scope in (WideScope.PORTAL_WIDE, WideScope.BUSINESS_UNIT_WIDE):
            for row in self.wide:
                covers = scope is WideScope.PORTAL_WIDE or row.business_unit_id == business_unit_id
                if row.scope is scope and row.status is Status.UNSUBSCRIBED and covers:
                    return scope
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
