"""Site-wide values (implements shared.contracts.key_values.KeyValueService)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from shared.contracts.errors import InvalidInputError, NotFoundError
from shared.contracts.key_values import KeyValueDTO
from shared.models.key_values import KeyValue

MAX_KEY_LENGTH = 200


def to_key_value_dto(entry: KeyValue) -> KeyValueDTO:
    return KeyValueDTO(key=entry.key, value=entry.value, updated_at=entry.updated_at)


class SqlKeyValueService:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get_value(self, key: str, default: Any = None) -> Any:
        value = await self.session.scalar(select(KeyValue.value).where(KeyValue.key == key))
        return default if value is None else value

    async def get_entry(self, key: str) -> KeyValueDTO:
        entry = await self.session.get(KeyValue, key)
        if entry is None:
            raise NotFoundError(f"no value is stored under {key!r}")
        return to_key_value_dto(entry)

    async def do_set_value(self, key: str, value: Any) -> KeyValueDTO:
        if not key or len(key) > MAX_KEY_LENGTH:
            raise InvalidInputError(f"a key is 1 to {MAX_KEY_LENGTH} characters")
        insert_row = insert(KeyValue).values(key=key, value=value)
        upsert = insert_row.on_conflict_do_update(
            index_elements=[KeyValue.key],
            set_={"value": insert_row.excluded.value, "updated_at": func.now()},
        ).returning(KeyValue)
        entry = await self.session.scalar(upsert, execution_options={"populate_existing": True})
        assert entry is not None
        return to_key_value_dto(entry)

    async def do_delete_value(self, key: str) -> bool:
        result = await self.session.execute(
            delete(KeyValue).where(KeyValue.key == key).returning(KeyValue.key)
        )
        return result.first() is not None
