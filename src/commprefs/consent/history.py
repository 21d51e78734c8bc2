"""The consent history as read: events with the names they refer to (history, feed, webhooks, subjects)."""

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from commprefs.domain.model import Definition
from commprefs.store import Tx


@dataclass(frozen=True, slots=True)
class Recorded:
    """Consent events as stored (`rows`, oldest or newest first as asked), with the portal's definitions and
    its tokens' names, which the events name by id."""

    rows: Sequence[Any] = ()
    definitions: dict[int, Definition] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)


def recorded(tx: Tx, portal_id: int, rows: Sequence[Any]) -> Recorded:
    if not rows:
        return Recorded(rows)
    _, definitions = tx.portals.portal_snapshot(portal_id)
    return Recorded(rows, {d.id: d for d in definitions}, tx.tokens.token_names(portal_id))
