"""The one declarative Base of every model, with a constraint naming convention.

Named constraints make Alembic migrations deterministic: a constraint can be dropped or
altered by a name we chose, on every database, instead of one PostgreSQL made up.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, MetaData, func
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def utc_now_column() -> Mapped[datetime]:
    """A timezone-aware timestamp column that the database fills with now()."""
    return mapped_column(DateTime(timezone=True), server_default=func.now(), nullable=False)
