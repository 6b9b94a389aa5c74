"""What the staff console needs besides hub.broadcasts: names to choose from, an audited cancel."""

from __future__ import annotations

import unicodedata

from sqlalchemy import select
from sqlalchemy.orm import Session

from hub.broadcasts import cancel_broadcast
from hub.models import Area, Topic
from hub.runtime import Runtime
from hub.staff import audit


def named_choices(session: Session, model: type[Area | Topic], locale: str, default_locale: str):
    """(slug, name in `locale`) of every area or topic, by name."""
    rows = session.execute(select(model.slug, model.names)).all()
    named = [(slug, names.get(locale) or names.get(default_locale) or slug) for slug, names in rows]
    # Decomposed, Č sorts after every C and before D, as in the Slovenian alphabet.
    return sorted(named, key=lambda pair: unicodedata.normalize("NFD", pair[1].casefold()))


def cancel_notice(rt: Runtime, broadcast_id: int, *, actor: str) -> int:
    """Cancel what has not gone yet, in the audit log; raises BroadcastError."""
    with rt.session() as session:
        cancelled = cancel_broadcast(session, broadcast_id)
        audit(session, actor, "broadcast.cancel", f"broadcast:{broadcast_id}", deliveries=cancelled)
    return cancelled
