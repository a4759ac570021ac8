"""SSO sessions and app grants (implements shared.contracts.identity.SsoService).

Tokens are random (256 bits) and stored as SHA-256 hashes: a database leak gives no one a
working session. Signing a device out revokes its session, the grants made from it and their
tokens in one transaction, and queues an outbox event ("sso.logout") that tells the apps
(back-channel logout) and drops their cached grant status after commit.

A session is live while unrevoked, used within the idle lifetime (``last_seen_at``, touched as
the device uses federation or any app) and younger than the absolute lifetime
(``created_at``); the lifetimes are settings (``Settings.sessions``). A session past either is
refused here, on the server, whatever its cookie's Max-Age says, and so are the grants made
from it.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime, timedelta

from sqlalchemy import ColumnElement, and_, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from shared.config import SessionSettings
from shared.contracts.identity import GrantStatusDTO, SsoSessionDTO, StartedSession
from shared.models.identity import OAuthClient, OAuthGrant, OAuthToken, SsoSession
from shared.services.outbox import do_enqueue

LOGOUT_EVENT = "sso.logout"
MAX_USER_AGENT = 300


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(32)


def live_session_clause(lifetimes: SessionSettings, now: datetime) -> ColumnElement[bool]:
    """SQL for "this SSO session is still live" at ``now``."""
    return and_(
        SsoSession.revoked_at.is_(None),
        SsoSession.last_seen_at > now - timedelta(seconds=lifetimes.idle_lifetime_seconds),
        SsoSession.created_at > now - timedelta(seconds=lifetimes.absolute_lifetime_seconds),
    )


async def check_session_live(
    session: AsyncSession, lifetimes: SessionSettings, sso_session_id: int | None
) -> bool:
    """Whether the SSO session a grant was made from is still live (a grant made without one
    stands on its own): the grant, and every token of it, stand only while it is."""
    if sso_session_id is None:
        return True
    found = await session.scalar(
        select(SsoSession.id).where(
            SsoSession.id == sso_session_id, live_session_clause(lifetimes, datetime.now(UTC))
        )
    )
    return found is not None


class SqlSsoService:
    def __init__(self, session: AsyncSession, lifetimes: SessionSettings | None = None) -> None:
        self.session = session
        self.lifetimes = lifetimes or SessionSettings()

    def _live(self) -> ColumnElement[bool]:
        return live_session_clause(self.lifetimes, datetime.now(UTC))

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
        now = datetime.now(UTC)  # the app's clock, as auth_time is compared with it
        row = SsoSession(
            token_hash=hash_token(token),
            user_id=user_id,
            auth_time=now,
            created_at=now,
            last_seen_at=now,
            user_agent=user_agent[:MAX_USER_AGENT],
            ip_address=ip_address[:64],
        )
        self.session.add(row)
        await self.session.flush()
        await self.session.refresh(row)
        return StartedSession(token=token, session=await self._to_dto(row))

    async def get_active_session(self, token: str) -> SsoSessionDTO | None:
        row = await self.session.scalar(
            select(SsoSession).where(SsoSession.token_hash == hash_token(token), self._live())
        )
        return await self._to_dto(row) if row is not None else None

    async def do_touch_session(self, sso_session_id: int) -> None:
        """Record that the device was used now (at most once a minute, to spare writes), which
        keeps a live session from idling out; an expired one stays expired."""
        await self.session.execute(
            update(SsoSession)
            .where(
                SsoSession.id == sso_session_id,
                self._live(),
                SsoSession.last_seen_at < func.now() - func.make_interval(0, 0, 0, 0, 0, 1),
            )
            .values(last_seen_at=func.now())
        )

    async def do_record_authentication(self, sso_session_id: int) -> None:
        """The member proved who they are again on this device (a sign-in while signed in,
        as ``prompt=login`` or ``max_age`` ask): the session's auth_time becomes now."""
        await self.session.execute(
            update(SsoSession)
            .where(SsoSession.id == sso_session_id, SsoSession.revoked_at.is_(None))
            .values(auth_time=datetime.now(UTC), last_seen_at=func.now())
        )

    async def list_sessions(self, user_id: int) -> list[SsoSessionDTO]:
        rows = await self.session.scalars(
            select(SsoSession)
            .where(SsoSession.user_id == user_id, self._live())
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
            active=row.revoked_at is None
            and await check_session_live(self.session, self.lifetimes, row.sso_session_id),
        )
