"""The import file formats: each turns one CSV row into the records it means.

Columns are found by their header names (any case; spaces, `_` and `-` alike), never by position,
so exports with extra or reordered columns import as they are. Three formats:

- `commprefs`: our own (what `commprefs export` writes): one status or opt-out from all per row.
- `hubspot`: a HubSpot contacts export (its "Opted out of email: <name>" and "Unsubscribed from all
  email" columns), or HubSpot's "Export unsubscribes and bounces" file.
- `mailchimp`: a Mailchimp audience export file: subscribed, unsubscribed or cleaned members.
"""

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from functools import cached_property

from commprefs.consent import ImportedStatus, Provenance
from commprefs.domain.email import normalize_email
from commprefs.domain.enums import LEGAL_BASIS_OF, STATUS_OF, WIDE_SCOPE_OF, LegalBasis, Source, Status, WideScope
from commprefs.domain.errors import DomainError


class Format(StrEnum):
    COMMPREFS = "commprefs"
    HUBSPOT = "hubspot"
    MAILCHIMP = "mailchimp"


class HeaderError(Exception):
    """The file cannot be imported at all (nothing was written): a missing column, an unknown format."""


class RowError(Exception):
    """One row is refused, with the reason the reject file gives."""


# A parsed row: the records it holds (none is fine: a contact with nothing to say).
Parser = Callable[[dict[str, str]], list[ImportedStatus]]

# Rows from more than a day ahead would outrank every real change later on ("never override a
# newer change"), so they are refused rather than trusted.
FUTURE_TOLERANCE_MS = 24 * 3600 * 1000
MAX_SOURCE_CHARS = 200  # the store's column


def column_key(name: str) -> str:
    return re.sub(r"[\s_\-]+", " ", name.strip().lower().lstrip("\ufeff"))


@dataclass(frozen=True)
class Columns:
    """The file's header, looked up by normalised name."""

    names: Sequence[str]

    @cached_property
    def _by_key(self) -> dict[str, str]:
        return {column_key(n): n for n in self.names}

    def find(self, *candidates: str) -> str | None:
        """The first candidate the header has; Mailchimp's parser asks for each row."""
        for candidate in candidates:
            if (name := self._by_key.get(column_key(candidate))) is not None:
                return name
        return None


def detect(header: Sequence[str]) -> Format:
    keys = {column_key(h) for h in header}
    if "email address" in keys and keys & {"optin time", "leid", "euid", "member rating", "unsub time", "clean time"}:
        return Format.MAILCHIMP
    if (
        keys & {"record id", "unsubscribed from all email", "hs email optout", "portal unsubscribe"}
        or any(k.startswith(("opted out of email:", "hs email optout ")) for k in keys)
    ) and "status" not in keys:
        return Format.HUBSPOT
    if "email" in keys and "status" in keys:
        return Format.COMMPREFS
    raise HeaderError(
        "cannot tell the file's format from its header: give --format (commprefs, hubspot or mailchimp); "
        "a commprefs file needs at least the columns email and status"
    )


def parse_time(text: str, now: int) -> int:
    """Epoch milliseconds from ISO 8601 (`2021-03-04T10:22:33Z`, `2021-03-04 10:22`, `2021-03-04`) or
    epoch seconds/milliseconds; a time without a zone is UTC."""
    value = text.strip()
    try:
        if value.isdigit():
            number = int(value)
            ms = number if number > 100_000_000_000 else number * 1000
        else:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
            ms = int(moment.timestamp() * 1000)
    except (ValueError, OverflowError, OSError) as exc:
        raise RowError(f"{text!r} is not a date and time (use ISO 8601, e.g. 2021-03-04T10:22:33Z)") from exc
    if ms > now + FUTURE_TOLERANCE_MS:
        raise RowError(f"{text!r} is in the future")
    if ms < 0:
        raise RowError(f"{text!r} is before 1970")
    return ms


def _email(row: dict[str, str], column: str) -> str:
    try:
        return normalize_email(row.get(column) or "", field=column)
    except DomainError as exc:
        raise RowError(exc.message) from exc


def _status(text: str) -> Status:
    status = STATUS_OF.get(text.strip().upper())
    if status is None:
        allowed = ", ".join(s.value for s in Status)
        raise RowError(f"status {text!r} is not one of {allowed}")
    return status


def _legal_basis(text: str) -> LegalBasis | None:
    value = text.strip()
    if not value:
        return None
    basis = LEGAL_BASIS_OF.get(value.upper())
    if basis is not None:
        return basis
    for label, basis in HUBSPOT_LEGAL_BASES.items():
        if column_key(value) == column_key(label):
            return basis
    raise RowError(f"legal basis {text!r} is not one of {', '.join(b.value for b in LegalBasis)}")


def _int(text: str, column: str) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise RowError(f"{column} {text!r} is not a number") from None
    if not 0 <= value < 2**63:
        raise RowError(f"{column} {text!r} is out of range")
    return value


def _truthy(text: str | None) -> bool:
    return (text or "").strip().lower() in {"true", "yes", "1", "y", "x"}


# -- commprefs' own format -------------------------------------------------------------------------

# The `scope` of a per-subscription row in commprefs' own format (opt-outs from all carry their wide scope).
SUBSCRIPTION_SCOPE = "SUBSCRIPTION"
COMMPREFS_COLUMNS = (
    "email",
    "scope",
    "business_unit_id",
    "subscription_id",
    "subscription_name",
    "status",
    "legal_basis",
    "legal_basis_explanation",
    "timestamp",
    "source",
)


def commprefs_parser(columns: Columns, now: int) -> Parser:
    """email, status, and either a subscription (`subscription_name`, `subscription_id`, or
    `subscription` holding either) or a `scope` of PORTAL_WIDE / BUSINESS_UNIT_WIDE; optional
    business_unit_id, legal_basis, legal_basis_explanation, timestamp and source. (A rejects file's
    `reason` column, the import's own complaint, is not read back as the contact's reason.)"""
    email = columns.find("email", "email address")
    status = columns.find("status")
    if email is None or status is None:
        raise HeaderError("a commprefs import needs the columns email and status")
    name_col = columns.find("subscription_name", "subscription name")
    id_col = columns.find("subscription_id")
    either_col = columns.find("subscription")
    scope_col = columns.find("scope")
    unit_col = columns.find("business_unit_id", "brand_id")
    basis_col = columns.find("legal_basis")
    explanation_col = columns.find("legal_basis_explanation")
    time_col = columns.find("timestamp", "updated_at", "occurred_at")
    source_col = columns.find("source")
    if scope_col is None and name_col is None and id_col is None and either_col is None:
        raise HeaderError("a commprefs import needs a subscription_name, subscription_id or subscription column")

    def parse(row: dict[str, str]) -> list[ImportedStatus]:
        def cell(column: str | None) -> str:
            return (row.get(column) or "").strip() if column else ""

        address = _email(row, email)
        state = _status(cell(status))
        unit = _int(cell(unit_col), "business_unit_id") if cell(unit_col) else None
        source = cell(source_col) or Source.IMPORT.value
        if len(source) > MAX_SOURCE_CHARS:
            raise RowError(f"source is longer than {MAX_SOURCE_CHARS} characters")
        provenance = Provenance(
            source=source,
            at=parse_time(cell(time_col), now) if cell(time_col) else now,
        )
        scope_text = cell(scope_col).upper()
        if scope_text in ("PORTAL_WIDE", "BUSINESS_UNIT_WIDE"):
            scope = WIDE_SCOPE_OF[scope_text]
            if scope is WideScope.BUSINESS_UNIT_WIDE and unit is None:
                raise RowError("a BUSINESS_UNIT_WIDE row needs its business_unit_id")
            return [ImportedStatus(address, state, provenance, scope=scope, business_unit_id=unit)]
        if scope_text not in ("", SUBSCRIPTION_SCOPE):
            raise RowError(f"scope {cell(scope_col)!r} is not one of SUBSCRIPTION, PORTAL_WIDE, BUSINESS_UNIT_WIDE")
        subscription: int | str
        if cell(name_col):
            subscription = cell(name_col)
        elif cell(id_col):
            subscription = _int(cell(id_col), "subscription_id")
        elif cell(either_col):
            text = cell(either_col)
            subscription = int(text) if text.isdigit() else text
        else:
            raise RowError("the row names no subscription (subscription_name or subscription_id)")
        return [
            ImportedStatus(
                address,
                state,
                provenance,
                subscription=subscription,
                business_unit_id=unit,
                legal_basis=_legal_basis(cell(basis_col)),
                legal_basis_explanation=cell(explanation_col) or None,
            )
        ]

    return parse


# -- HubSpot ---------------------------------------------------------------------------------------

# The labels of HubSpot's "Legal basis for processing contact's data" property.
HUBSPOT_LEGAL_BASES = {
    "Legitimate interest – prospect/lead": LegalBasis.LEGITIMATE_INTEREST_PQL,
    "Legitimate interest - prospect/lead": LegalBasis.LEGITIMATE_INTEREST_PQL,
    "Legitimate interest – existing customer": LegalBasis.LEGITIMATE_INTEREST_CLIENT,
    "Legitimate interest - existing customer": LegalBasis.LEGITIMATE_INTEREST_CLIENT,
    "Legitimate interest - other": LegalBasis.LEGITIMATE_INTEREST_OTHER,
    "Legitimate interest – other": LegalBasis.LEGITIMATE_INTEREST_OTHER,
    "Performance of a contract": LegalBasis.PERFORMANCE_OF_CONTRACT,
    "Freely given consent from contact": LegalBasis.CONSENT_WITH_NOTICE,
    "Not applicable": LegalBasis.NON_GDPR,
}

_OPTED_OUT = re.compile(r"^opted out of email: (.+)$")
_OPTED_OUT_ID = re.compile(r"^hs email optout (\d+)$")


def hubspot_subscriptions(columns: Columns) -> dict[str, int | str]:
    """Column -> subscription (a name, or an id for `hs_email_optout_<id>`) of the per-type opt-out columns."""
    found: dict[str, int | str] = {}
    for name in columns.names:
        key = column_key(name)
        if match := _OPTED_OUT_ID.match(key):
            found[name] = int(match.group(1))
        elif match := _OPTED_OUT.match(key):
            found[name] = name.split(":", 1)[1].strip()
    return found


def hubspot_parser(columns: Columns, now: int, subscription_columns: dict[str, int | str]) -> Parser:
    """A contacts export: "Unsubscribed from all email" true is a portal-wide opt-out, each "Opted out
    of email: <name>" true an unsubscribe from that type (false says nothing: HubSpot does not tell
    subscribed from never asked). The export has no per-type dates: the row's "Last modified date"
    (else "Create date") is used. The "Export unsubscribes and bounces" file works too: "Portal
    unsubscribe" and "Portal spam report" are opt-outs from all, and each type column set to TRUE
    an unsubscribe (bounces are delivery facts, not consent, and are skipped)."""
    email = columns.find("email", "email address")
    if email is None:
        raise HeaderError("a HubSpot export needs its Email column")
    wide_cols = [
        c
        for c in (
            columns.find("unsubscribed from all email", "hs_email_optout"),
            columns.find("portal unsubscribe"),
            columns.find("portal spam report"),
        )
        if c
    ]
    time_col = columns.find("last modified date", "lastmodifieddate", "create date", "createdate")
    if not wide_cols and not subscription_columns:
        raise HeaderError(
            "the HubSpot export has no opt-out column: export the properties 'Unsubscribed from all email' "
            "and 'Opted out of email: <type>'"
        )

    def parse(row: dict[str, str]) -> list[ImportedStatus]:
        address = _email(row, email)
        text = (row.get(time_col) or "").strip() if time_col else ""
        provenance = Provenance(Source.IMPORT_HUBSPOT.value, parse_time(text, now) if text else now)
        records = [
            ImportedStatus(address, Status.UNSUBSCRIBED, provenance, subscription=subscription)
            for column, subscription in subscription_columns.items()
            if _truthy(row.get(column))
        ]
        if any(_truthy(row.get(c)) for c in wide_cols):
            records.append(ImportedStatus(address, Status.UNSUBSCRIBED, provenance, scope=WideScope.PORTAL_WIDE))
        return records

    return parse


# -- Mailchimp -------------------------------------------------------------------------------------


class MailchimpFile(StrEnum):
    SUBSCRIBED = "subscribed"
    UNSUBSCRIBED = "unsubscribed"
    CLEANED = "cleaned"


MAILCHIMP_EXPLANATION = "Opted in through Mailchimp"


def mailchimp_kind(columns: Columns) -> MailchimpFile:
    if columns.find("unsub_time"):
        return MailchimpFile.UNSUBSCRIBED
    if columns.find("clean_time"):
        return MailchimpFile.CLEANED
    return MailchimpFile.SUBSCRIBED


def mailchimp_parser(columns: Columns, now: int, subscription: int | str) -> Parser:
    """One of the three files of a Mailchimp audience export, into one subscription.

    subscribed: SUBSCRIBED at CONFIRM_TIME (double opt-in) or OPTIN_TIME, as consent with notice, the
    opt-in and confirmation times and IPs in the explanation. unsubscribed: UNSUBSCRIBED at
    UNSUB_TIME with the contact's UNSUB_REASON. cleaned (bounced addresses): UNSUBSCRIBED at
    CLEAN_TIME. Mailchimp's export times are UTC."""
    email = columns.find("email address", "email")
    if email is None:
        raise HeaderError("a Mailchimp export needs its 'Email Address' column")
    kind = mailchimp_kind(columns)
    find = columns.find

    def cell(row: dict[str, str], *names: str) -> str:
        for name in names:
            column = find(name)
            if column and (value := (row.get(column) or "").strip()):
                return value
        return ""

    def parse(row: dict[str, str]) -> list[ImportedStatus]:
        address = _email(row, email)
        if kind is MailchimpFile.SUBSCRIBED:
            when = cell(row, "confirm_time", "optin_time", "last_changed")
            details = [f"on {cell(row, 'optin_time')}" if cell(row, "optin_time") else ""]
            if ip := cell(row, "optin_ip"):
                details.append(f"from {ip}")
            if cell(row, "confirm_time"):
                details.append(f"confirmed {cell(row, 'confirm_time')}")
            if ip := cell(row, "confirm_ip"):
                details.append(f"from {ip}")
            explanation = " ".join([MAILCHIMP_EXPLANATION, *filter(None, details)])
            provenance = Provenance(Source.IMPORT_MAILCHIMP.value, parse_time(when, now) if when else now)
            return [
                ImportedStatus(
                    address,
                    Status.SUBSCRIBED,
                    provenance,
                    subscription=subscription,
                    legal_basis=LegalBasis.CONSENT_WITH_NOTICE,
                    legal_basis_explanation=explanation,
                )
            ]
        if kind is MailchimpFile.UNSUBSCRIBED:
            when = cell(row, "unsub_time", "last_changed")
            reason = ": ".join(filter(None, [cell(row, "unsub_reason"), cell(row, "unsub_reason_other")])) or None
            if campaign := cell(row, "unsub_campaign_title"):
                reason = f"{reason or 'Unsubscribed'} (campaign {campaign!r})"
        else:
            when = cell(row, "clean_time", "last_changed")
            reason = "Cleaned in Mailchimp: the address bounced"
        provenance = Provenance(Source.IMPORT_MAILCHIMP.value, parse_time(when, now) if when else now, reason)
        return [ImportedStatus(address, Status.UNSUBSCRIBED, provenance, subscription=subscription)]

    return parse
