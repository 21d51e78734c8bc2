"""Consent: the rules that decide what a change means, the unit of work they plan on, and the service face
(`Consent`) through which every adapter reads and changes a subscriber's consent.

- `unit.py`: `Changes` (the unit of work), `Effective` (a subscription as the APIs show it), the tombstone rule
- `rules.py`: v3, v4, batch and page rules
- `imports.py`: an imported record's rules; `erasure.py`: data-subject erasure
- `links.py`: the signed links of the contact's pages; `history.py`: events with the names they refer to
- `service.py`: `Consent`, the face
"""

from commprefs.consent.erasure import Erasure
from commprefs.consent.imports import ImportedStatus, ImportOutcome
from commprefs.consent.rules import (
    Refused,
    normalize_inputs,
    resubscribe_v3,
    set_status,
    subscribe_v3,
    unsubscribe_from_all,
    unsubscribe_v3,
    wide_statuses,
    write_batch,
)
from commprefs.consent.service import Answer, Consent, PageState, Retry, SubjectRecord
from commprefs.consent.unit import Changes, Effective, Provenance, StatusInput, apply, effective

__all__ = [
    "Answer",
    "Changes",
    "Consent",
    "Effective",
    "Erasure",
    "ImportOutcome",
    "ImportedStatus",
    "PageState",
    "Provenance",
    "Refused",
    "Retry",
    "StatusInput",
    "SubjectRecord",
    "apply",
    "effective",
    "normalize_inputs",
    "resubscribe_v3",
    "set_status",
    "subscribe_v3",
    "unsubscribe_from_all",
    "unsubscribe_v3",
    "wide_statuses",
    "write_batch",
]
