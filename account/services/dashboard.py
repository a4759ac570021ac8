"""The account dashboard's wiring: the member's account and devices, revoking devices.

Services come in explicitly (the views take them from the registry), so each function is
testable on its own; they return view DTOs and raise domain errors.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from shared.contracts.errors import NotFoundError
from shared.contracts.identity import AccountDTO, AccountService, SsoService

REVOKED_FROM_ACCOUNT = "revoked in account"
SIGNED_OUT_EVERYWHERE = "signed out everywhere"

BROWSERS = (
    ("Edg/", "Edge"),
    ("OPR/", "Opera"),
    ("Firefox/", "Firefox"),
    ("Chrome/", "Chrome"),
    ("Safari/", "Safari"),
)
SYSTEMS = (
    ("iPhone", "iPhone"),
    ("iPad", "iPad"),
    ("Android", "Android"),
    ("Windows", "Windows"),
    ("Mac OS X", "macOS"),
    ("CrOS", "ChromeOS"),
    ("Linux", "Linux"),
)


@dataclass(frozen=True)
class DeviceView:
    """A device (an SSO session at federation) as the dashboard lists it."""

    id: int
    label: str
    ip_address: str
    signed_in_at: datetime
    last_seen_at: datetime
    apps: tuple[str, ...]  # the names of the apps (OAuth clients) signed in from it
    current: bool


@dataclass(frozen=True)
class DashboardView:
    account: AccountDTO
    devices: list[DeviceView]


def describe_user_agent(user_agent: str) -> str:
    """ "Firefox on Linux" from a User-Agent string, or "Unknown device"."""
    browser = next((name for token, name in BROWSERS if token in user_agent), None)
    system = next((name for token, name in SYSTEMS if re.search(token, user_agent)), None)
    if browser and system:
        return f"{browser} on {system}"
    return browser or system or "Unknown device"


async def get_dashboard(
    accounts: AccountService, sso: SsoService, user_id: int, current_device: int | None
) -> DashboardView:
    account = await accounts.get_account(user_id)
    devices = [
        DeviceView(
            id=device.id,
            label=describe_user_agent(device.user_agent),
            ip_address=device.ip_address,
            signed_in_at=device.auth_time,
            last_seen_at=device.last_seen_at,
            apps=device.app_names,
            current=device.id == current_device,
        )
        for device in await sso.list_sessions(user_id)
    ]
    return DashboardView(account=account, devices=devices)


async def do_revoke_device(sso: SsoService, user_id: int, device_id: int) -> list[int]:
    """Sign one of the member's devices out of every app; NotFoundError unless it is theirs
    and still signed in. Returns the revoked grant ids (for the cache purge)."""
    if device_id not in {device.id for device in await sso.list_sessions(user_id)}:
        raise NotFoundError("no such device is signed in to your account")
    return await sso.do_sign_out_device(device_id, reason=REVOKED_FROM_ACCOUNT)


async def do_sign_out_everywhere(sso: SsoService, user_id: int) -> list[int]:
    """Sign the member out on every device, as SsoService.do_sign_out_everywhere does, but
    one device at a time so that the revoked grant ids are known (for the cache purge)."""
    revoked: list[int] = []
    for device in await sso.list_sessions(user_id):
        revoked += await sso.do_sign_out_device(device.id, reason=SIGNED_OUT_EVERYWHERE)
    return revoked
