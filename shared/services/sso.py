"""SSO sessions and app grants (implements shared.contracts.protocols.SsoService).

Tokens are random (256 bits) and stored as SHA-256 hashes: a database leak gives no one a
working session. Signing a device out revokes its session, the grants made from it and their
tokens in one transaction, and queues an outbox event ("sso.logout") that tells the apps
(back-channel logout) and drops their cached grant status after commit.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from shared.contracts.dtos import GrantStatusDTO, SsoSessionDTO, StartedSession
from shared.models.identity import OAuthClient, OAuthGrant, OAuthToken, SsoSession
from shared.services.outbox import do_enqueue

LOGOUT_EVENT = "sso.logout"
MAX_USER_AGENT = 300


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(32)


class SqlSsoService:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def _to_dto(self, row: SsoSession) -> SsoSessionDTO:
        names = await self.session.scalars(
            select(OAuthClient.name)
            .join(OAuthGrant, OAuthGrant.client_id == OAuthClient.client_id)
            .where(OAuthGrant.sso_session_id == row.id, OAuthGrant.revoked_at.is_(None))
            .distinct()
            .order_by(OAuthClient.name)
        )
        return SsoSessionDTO(
            id=row.id,
            user_id=row.user_id,
            auth_time=row.auth_time,
            created_at=row.created_at,
            last_seen_at=row.last_seen_at,
            user_agent=row.user_agent,
            ip_address=row.ip_address,
            app_names=tuple(names),
        )

    async def do_start_session(
        self, user_id: int, *, user_agent: str = "", ip_address: str = ""
    ) -> StartedSession:
        token = new_token()
        row = SsoSession(
            token_hash=hash_token(token),
            user_id=user_id,
            user_agent=user_agent[:MAX_USER_AGENT],
            ip_address=ip_address[:64],
        )
        self.session.add(row)
        await self.session.flush()
        await self.session.refresh(row)
        return StartedSession(token=token, session=await self._to_dto(row))

    async def get_active_session(self, token: str) -> SsoSessionDTO | None:
        row = await self.session.scalar(
            select(SsoSession).where(
                SsoSession.token_hash == hash_token(token), SsoSession.revoked_at.is_(None)
            )
        )
        return await self._to_dto(row) if row is not None else None

    async def list_sessions(self, user_id: int) -> list[SsoSessionDTO]:
        rows = await self.session.scalars(
            select(SsoSession)
            .where(SsoSession.user_id == user_id, SsoSession.revoked_at.is_(None))
            .order_by(SsoSession.last_seen_at.desc(), SsoSession.id.desc())
        )
        return [await self._to_dto(row) for row in rows]

    async def do_sign_out_device(self, sso_session_id: int, *, reason: str) -> list[int]:
        now = datetime.now(UTC)
        ended = await self.session.execute(
            update(SsoSession)
            .where(SsoSession.id == sso_session_id, SsoSession.revoked_at.is_(None))
            .values(revoked_at=now)
            .returning(SsoSession.user_id)
        )
        user_id = ended.scalar()
        if user_id is None:
            return []
        grants = await self.session.execute(
            update(OAuthGrant)
            .where(OAuthGrant.sso_session_id == sso_session_id, OAuthGrant.revoked_at.is_(None))
            .values(revoked_at=now, revoked_reason=reason)
            .returning(OAuthGrant.id, OAuthGrant.client_id)
        )
        revoked = [(grant_id, client_id) for grant_id, client_id in grants]
        grant_ids = [grant_id for grant_id, _ in revoked]
        if grant_ids:
            await self.session.execute(
                update(OAuthToken)
                .where(OAuthToken.grant_id.in_(grant_ids), OAuthToken.revoked_at.is_(None))
                .values(revoked_at=now)
            )
        await do_enqueue(
            self.session,
            LOGOUT_EVENT,
            {
                "sso_session_id": sso_session_id,
                "user_id": user_id,
                "grants": [{"id": gid, "client_id": cid} for gid, cid in revoked],
                "reason": reason,
            },
        )
        return grant_ids

    async def do_sign_out_everywhere(self, user_id: int) -> int:
        session_ids = list(
            await self.session.scalars(
                select(SsoSession.id).where(
                    SsoSession.user_id == user_id, SsoSession.revoked_at.is_(None)
                )
            )
        )
        for session_id in session_ids:
            await self.do_sign_out_device(session_id, reason="signed out everywhere")
        return len(session_ids)

    async def get_grant_status(self, grant_id: int) -> GrantStatusDTO | None:
        row = await self.session.get(OAuthGrant, grant_id)
        if row is None:
            return None
        return GrantStatusDTO(
            grant_id=row.id,
            user_id=row.user_id,
            client_id=row.client_id,
            sso_session_id=row.sso_session_id,
            active=row.revoked_at is None,
        )


async def do_touch_session(session: AsyncSession, sso_session_id: int) -> None:
    """Record that the device was seen now (at most once a minute, to spare writes)."""
    await session.execute(
        update(SsoSession)
        .where(
            SsoSession.id == sso_session_id,
            SsoSession.last_seen_at < func.now() - func.make_interval(0, 0, 0, 0, 0, 1),
        )
        .values(last_seen_at=func.now())
    )
