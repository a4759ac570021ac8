"""The registry hands out implementations by protocol; each one conforms to its protocol."""

from __future__ import annotations

import inspect
from typing import Any, Protocol, get_type_hints

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from shared.contracts.identity import AccountService, SsoService, UserService
from shared.contracts.key_values import KeyValueService
from shared.contracts.navigation import NavigationService
from shared.services.identity.accounts import SqlAccountService
from shared.services.identity.sso import SqlSsoService
from shared.services.identity.users import SqlUserService
from shared.services.key_values import SqlKeyValueService
from shared.services.navigation import SqlNavigationService
from shared.services.registry import ServiceRegistry, UnknownServiceError, build_registry

IMPLEMENTATIONS: list[tuple[type[Any], type[Any]]] = [
    (UserService, SqlUserService),
    (KeyValueService, SqlKeyValueService),
    (SsoService, SqlSsoService),
    (AccountService, SqlAccountService),
    (NavigationService, SqlNavigationService),
]


def protocol_members(protocol: type[Any]) -> list[str]:
    return sorted(
        name
        for name, value in vars(protocol).items()
        if inspect.isfunction(value) and not name.startswith("_")
    )


def check_conforms(implementation: type[Any], protocol: type[Any]) -> list[str]:
    """Every protocol method exists with the same parameters, kinds, defaults and types."""
    problems = []
    for name in protocol_members(protocol):
        expected = getattr(protocol, name)
        actual = getattr(implementation, name, None)
        if actual is None:
            problems.append(f"{name} is missing")
            continue
        if inspect.iscoroutinefunction(expected) != inspect.iscoroutinefunction(actual):
            problems.append(f"{name}: async-ness differs")
        want, got = inspect.signature(expected), inspect.signature(actual)
        want_params = [(p.name, p.kind, p.default) for p in want.parameters.values()]
        got_params = [(p.name, p.kind, p.default) for p in got.parameters.values()]
        if want_params != got_params:
            problems.append(f"{name}: parameters {got_params} != {want_params}")
        if get_type_hints(expected) != get_type_hints(actual):
            problems.append(f"{name}: type hints differ")
    return problems


@pytest.mark.parametrize(("protocol", "implementation"), IMPLEMENTATIONS)
def test_implementation_conforms_to_its_protocol(
    protocol: type[Any], implementation: type[Any]
) -> None:
    assert protocol_members(protocol), "a protocol without methods checks nothing"
    assert check_conforms(implementation, protocol) == []


def test_conformance_check_catches_a_drifted_implementation() -> None:
    class Drifted:
        async def get_value(self, key: str) -> Any: ...  # lost its default parameter

        def get_entry(self, key: str) -> Any: ...  # not async

    problems = check_conforms(Drifted, KeyValueService)
    assert any(p.startswith("get_value: parameters") for p in problems)
    assert "get_entry: async-ness differs" in problems
    assert "do_set_value is missing" in problems


def test_every_registered_protocol_has_a_conformance_case() -> None:
    assert set(build_registry().protocols()) == {protocol for protocol, _ in IMPLEMENTATIONS}


async def test_registry_binds_services_to_the_given_session(session: AsyncSession) -> None:
    registry = build_registry()
    users = registry.get(UserService, session)
    assert isinstance(users, SqlUserService)
    assert isinstance(users, UserService)
    assert users.session is session


def test_unknown_and_duplicate_registrations_are_errors(session: AsyncSession) -> None:
    class OtherService(Protocol):
        def anything(self) -> None: ...

    registry = ServiceRegistry()
    with pytest.raises(UnknownServiceError, match="no service registered for OtherService"):
        registry.get(OtherService, session)
    registry.register(UserService, SqlUserService)
    with pytest.raises(ValueError, match="UserService is already registered"):
        registry.register(UserService, SqlUserService)
