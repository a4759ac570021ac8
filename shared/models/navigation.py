"""The site navigation: a tree of menu nodes that editors manage in blog (``nav-tree``)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, ForeignKey, Integer, String, func
from sqlalchemy.orm import Mapped, mapped_column

from shared.models.base import Base, utc_now_column


class MenuNode(Base):
    """One entry of the navigation; top-level nodes have no parent. Deleting a node deletes
    its children (the foreign key cascades). Siblings are ordered by ``position``."""

    __tablename__ = "menu_nodes"

    id: Mapped[int] = mapped_column(primary_key=True)
    parent_id: Mapped[int | None] = mapped_column(
        ForeignKey("menu_nodes.id", ondelete="CASCADE"), index=True, nullable=True
    )
    label: Mapped[str] = mapped_column(String(100), nullable=False)
    # An absolute http(s) URL, or a path on blog ("/about").
    url: Mapped[str] = mapped_column(String(2000), nullable=False)
    position: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    created_at: Mapped[datetime] = utc_now_column()
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now(), nullable=False
    )
