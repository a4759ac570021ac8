"""All ORM models, one module (or package) per domain.

Import a model from its own module (``from shared.models.identity import User``). This package
imports every model module once so that ``Base.metadata`` is complete for Alembic.
"""

from shared.models import identity, key_values, navigation, outbox
from shared.models.social import actors, inbox
from shared.models.social import outbox as social_outbox

__all__ = ["actors", "identity", "inbox", "key_values", "navigation", "outbox", "social_outbox"]
