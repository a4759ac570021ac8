"""Domain errors: services raise these; each app maps them to HTTP responses."""

from __future__ import annotations


class DomainError(Exception):
    """Base of every error a domain service raises on purpose."""


class NotFoundError(DomainError):
    """The thing asked for does not exist (HTTP 404)."""


class ConflictError(DomainError):
    """The change clashes with existing data, e.g. a taken email or username (HTTP 409)."""


class InvalidInputError(DomainError):
    """The input breaks a domain rule; the message says which (HTTP 422)."""


class ForbiddenError(DomainError):
    """The member (or a visitor) may not do this, e.g. use a link another member asked for
    (HTTP 403)."""
