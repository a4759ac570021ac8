"""The identity domain: members, their accounts and sign-in links, SSO sessions and grants,
OAuth clients and the OIDC signing keys."""
