"""All ORM models, one module per domain.

Import a model from its own module (``from shared.models.users import User``). This package
imports every model module once so that ``Base.metadata`` is complete for Alembic.
"""

from shared.models import (
    ap_actors,
    ap_inbox,
    ap_outbox,
    identity,
    key_values,
    navigation,
    outbox,
    users,
)

__all__ = [
    "ap_actors",
    "ap_inbox",
    "ap_outbox",
    "identity",
    "key_values",
    "navigation",
    "outbox",
    "users",
]
