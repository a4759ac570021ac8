"""All ORM models, one module per domain.

Import a model from its own module (``from shared.models.users import User``). This package
imports every model module once so that ``Base.metadata`` is complete for Alembic.
"""

from shared.models import key_values, users

__all__ = ["key_values", "users"]
