"""Closed sets of the domain, defined once."""

from enum import StrEnum
from typing import Final


class Status(StrEnum):
    """A stored per-subscription state (v4's three states)."""

    SUBSCRIBED = "SUBSCRIBED"
    UNSUBSCRIBED = "UNSUBSCRIBED"
    NOT_SPECIFIED = "NOT_SPECIFIED"


class V3Status(StrEnum):
    """v3's two-valued view of a status."""

    SUBSCRIBED = "SUBSCRIBED"
    NOT_SUBSCRIBED = "NOT_SUBSCRIBED"


class SourceOfStatus(StrEnum):
    """Where v3 says a status comes from."""

    PORTAL_WIDE_STATUS = "PORTAL_WIDE_STATUS"
    BRAND_WIDE_STATUS = "BRAND_WIDE_STATUS"
    SUBSCRIPTION_STATUS = "SUBSCRIPTION_STATUS"


class LegalBasis(StrEnum):
    CONSENT_WITH_NOTICE = "CONSENT_WITH_NOTICE"
    LEGITIMATE_INTEREST_CLIENT = "LEGITIMATE_INTEREST_CLIENT"
    LEGITIMATE_INTEREST_OTHER = "LEGITIMATE_INTEREST_OTHER"
    LEGITIMATE_INTEREST_PQL = "LEGITIMATE_INTEREST_PQL"
    NON_GDPR = "NON_GDPR"
    PERFORMANCE_OF_CONTRACT = "PERFORMANCE_OF_CONTRACT"
    PROCESS_AND_STORE = "PROCESS_AND_STORE"


class SetStatusReason(StrEnum):
    """What a v4 write did, reported as `setStatusSuccessReason`."""

    NO_STATUS_CHANGE = "NO_STATUS_CHANGE"
    REQUESTED_CHANGE_OCCURRED = "REQUESTED_CHANGE_OCCURRED"
    RESUBSCRIBE_OCCURRED = "RESUBSCRIBE_OCCURRED"
    UNSUBSCRIBE_FROM_ALL_OCCURRED = "UNSUBSCRIBE_FROM_ALL_OCCURRED"


class Channel(StrEnum):
    EMAIL = "EMAIL"


class WideScope(StrEnum):
    """The reach of an opt-out from all: the whole portal or one brand."""

    PORTAL_WIDE = "PORTAL_WIDE"
    BUSINESS_UNIT_WIDE = "BUSINESS_UNIT_WIDE"


# Members by value, for the loops that turn thousands of stored or imported values into members a call:
# `Status(value)` goes through the enum machinery and cost a tenth of an import.
STATUS_OF: Final = {member.value: member for member in Status}
LEGAL_BASIS_OF: Final = {member.value: member for member in LegalBasis}
WIDE_SCOPE_OF: Final = {member.value: member for member in WideScope}


class Source(StrEnum):
    """Who or what made a change; the values are what HubSpot's `source` shows."""

    API = "Public status API"
    NOT_SPECIFIED = "Not specified"
    PREFERENCE_PAGE = "Preference page"
    ONE_CLICK = "List-unsubscribe header"
    IMPORT = "Import"
    IMPORT_HUBSPOT = "Imported from HubSpot"
    IMPORT_MAILCHIMP = "Imported from Mailchimp"
    ADMIN = "Admin"
    ERASURE = "Data subject erasure"


class Scope(StrEnum):
    """API token scopes; the first five are HubSpot's, the last is ours."""

    READ = "communication_preferences.read"
    WRITE = "communication_preferences.write"
    READ_WRITE = "communication_preferences.read_write"
    BATCH_READ = "communication_preferences.statuses.batch.read"
    BATCH_WRITE = "communication_preferences.statuses.batch.write"
    ADMIN = "commprefs.admin"


# HubSpot's 2026-03 guide names the same permissions differently; each is an alias of its spec name.
SCOPE_ALIASES: dict[str, Scope] = {
    "subscriptions-definition-read": Scope.READ,
    "subscriptions-status-read": Scope.READ,
    "subscriptions-status-write": Scope.WRITE,
    "subscription-status-batch-read": Scope.BATCH_READ,
    "subscription-status-batch-write": Scope.BATCH_WRITE,
}


def parse_scope(name: str) -> Scope:
    """A scope by its spec name or a documented alias; ValueError for anything else."""
    return SCOPE_ALIASES.get(name) or Scope(name)
