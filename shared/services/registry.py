"""The typed service registry: how an app reaches a domain's service.

An app asks by protocol, ``registry.get(UserService, session)``, and gets the registered
implementation bound to that session (the request's). Apps never construct another domain's
service class themselves, so a domain can change its implementation in one place.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar, cast

from sqlalchemy.ext.asyncio import AsyncSession

from shared.config import Settings
from shared.contracts.identity import AccountService, SsoService, UserService
from shared.contracts.key_values import KeyValueService
from shared.contracts.navigation import NavigationService
from shared.services.identity.accounts import SqlAccountService
from shared.services.identity.sso import SqlSsoService
from shared.services.identity.users import SqlUserService
from shared.services.key_values import SqlKeyValueService
from shared.services.navigation import SqlNavigationService

ServiceT = TypeVar("ServiceT")
ServiceFactory = Callable[[AsyncSession], Any]


class UnknownServiceError(LookupError):
    """No implementation is registered for the protocol asked for."""


class ServiceRegistry:
    def __init__(self) -> None:
        self._factories: dict[type[Any], ServiceFactory] = {}

    def register(
        self, protocol: type[ServiceT], factory: Callable[[AsyncSession], ServiceT]
    ) -> None:
        if protocol in self._factories:
            raise ValueError(f"{protocol.__name__} is already registered")
        self._factories[protocol] = factory

    def get(self, protocol: type[ServiceT], session: AsyncSession) -> ServiceT:
        try:
            factory = self._factories[protocol]
        except KeyError:
            raise UnknownServiceError(f"no service registered for {protocol.__name__}") from None
        return cast(ServiceT, factory(session))

    def protocols(self) -> list[type[Any]]:
        return list(self._factories)


def build_registry(settings: Settings | None = None) -> ServiceRegistry:
    """The registry with every domain's default implementation (configured by ``settings``
    where a service has settings; their defaults without)."""
    registry = ServiceRegistry()
    registry.register(UserService, SqlUserService)
    registry.register(KeyValueService, SqlKeyValueService)
    lifetimes = settings.sessions if settings is not None else None
    registry.register(SsoService, partial(SqlSsoService, lifetimes=lifetimes))
    registry.register(AccountService, SqlAccountService)
    registry.register(NavigationService, SqlNavigationService)
    return registry
