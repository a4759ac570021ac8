// The certified OpenID Connect client openid-client (by panva) drives federation's
// authorization server: discovery, authorization code + PKCE (S256), id_token validation,
// userinfo, refresh with rotation (and reuse of a rotated refresh token), revocation
// (RFC 7009) and introspection (RFC 7662).
//
// Run by tests/interop/test_openid_client.py, which starts federation, signs a member in
// (an SSO session straight in the database) and passes, in the environment:
//   OIDC_ISSUER, OIDC_CLIENT_ID, OIDC_CLIENT_SECRET, OIDC_REDIRECT_URI, FEDERATION_SSO.
// Prints one JSON object of observations on stdout; the Python test asserts on it. Exits 1
// (with {"failure": ...} on stdout) when a step that must succeed does not.

import { createHash } from 'node:crypto'
import { readFileSync } from 'node:fs'
import * as client from 'openid-client'

const TIMEOUT_SECONDS = 10 // every HTTP request openid-client makes (its own timeout option)
const SCOPE = 'openid profile email'

function required(name) {
  const value = process.env[name]
  if (!value) throw new Error(`${name} is not set`)
  return value
}

const issuer = new URL(required('OIDC_ISSUER'))
const clientId = required('OIDC_CLIENT_ID')
const clientSecret = required('OIDC_CLIENT_SECRET')
const redirectUri = required('OIDC_REDIRECT_URI')
const ssoToken = required('FEDERATION_SSO')

if (issuer.hostname !== '127.0.0.1') {
  // allowInsecureRequests (plain http) is for the loopback test server only.
  throw new Error(`refusing to use plain http with ${issuer.hostname}: loopback only`)
}

// Every request openid-client makes, as "METHOD /path" (the proof it used each endpoint).
const requests = []

function loggingFetch(url, options) {
  requests.push(`${options.method ?? 'GET'} ${new URL(url).pathname}`)
  return fetch(url, options)
}

// A token endpoint whose id_token signature has been tampered with on the way: openid-client
// must refuse it after checking the signature against federation's JWKS.
async function tamperingFetch(url, options) {
  const response = await loggingFetch(url, options)
  if (new URL(url).pathname !== '/oauth/token' || response.status !== 200) return response
  const body = await response.json()
  const [header, payload, signature] = body.id_token.split('.')
  const middle = Math.floor(signature.length / 2)
  const flipped = signature[middle] === 'A' ? 'B' : 'A'
  const tampered = signature.slice(0, middle) + flipped + signature.slice(middle + 1)
  body.id_token = [header, payload, tampered].join('.')
  return new Response(JSON.stringify(body), {
    status: 200,
    headers: { 'content-type': 'application/json', 'cache-control': 'no-store' },
  })
}

function configure(fetchImplementation) {
  const metadata = { client_secret: clientSecret }
  const authentication = client.ClientSecretBasic(clientSecret)
  return client.discovery(issuer, clientId, metadata, authentication, {
    // Plain http on loopback; and check id_token signatures against the JWKS (openid-client
    // otherwise trusts an id_token that came straight from the token endpoint over TLS).
    execute: [client.allowInsecureRequests, client.enableNonRepudiationChecks],
    timeout: TIMEOUT_SECONDS,
    [client.customFetch]: fetchImplementation,
  })
}

function describeError(error) {
  const described = { name: error?.constructor?.name, code: error?.code, message: error?.message }
  if (error?.cause instanceof Error) described.cause = describeError(error.cause)
  if (error?.error !== undefined) described.error = error.error
  if (error?.status !== undefined) described.status = error.status
  if (error?.code === 'OAUTH_WWW_AUTHENTICATE_CHALLENGE') {
    described.challenges = error.cause.map(({ scheme, parameters }) => ({ scheme, parameters }))
  }
  return described
}

async function expectFailure(operation) {
  try {
    await operation()
  } catch (error) {
    return describeError(error)
  }
  return { unexpected_success: true }
}

// The member's browser: federation's SSO cookie, the authorization URL, the 302 back to the
// client's callback (not served: its URL is all openid-client needs).
async function authorize(config) {
  const verifier = client.randomPKCECodeVerifier()
  const state = client.randomState()
  const nonce = client.randomNonce()
  const url = client.buildAuthorizationUrl(config, {
    redirect_uri: redirectUri,
    scope: SCOPE,
    code_challenge: await client.calculatePKCECodeChallenge(verifier),
    code_challenge_method: 'S256',
    state,
    nonce,
  })
  const response = await fetch(url, {
    redirect: 'manual',
    headers: { cookie: `federation_sso=${ssoToken}` },
    signal: AbortSignal.timeout(TIMEOUT_SECONDS * 1000),
  })
  const location = response.headers.get('location') ?? ''
  if (response.status !== 302 || !location.startsWith(`${redirectUri}?`)) {
    const where = JSON.stringify(location)
    throw new Error(`authorization answered ${response.status} with Location ${where}`)
  }
  const callback = new URL(location)
  const observed = {
    status: response.status,
    authorization_endpoint: `${url.origin}${url.pathname}`,
    code_challenge_method: url.searchParams.get('code_challenge_method'),
    callback: `${callback.origin}${callback.pathname}`,
    callback_has_code: Boolean(callback.searchParams.get('code')),
    callback_state_matches: callback.searchParams.get('state') === state,
  }
  return { callback, verifier, state, nonce, observed }
}

function atHash(accessToken) {
  // RS256: the left half of the SHA-256 of the access token, base64url (OIDC Core 3.1.3.6).
  const digest = createHash('sha256').update(accessToken, 'ascii').digest()
  return digest.subarray(0, digest.length / 2).toString('base64url')
}

function idTokenHeader(idToken) {
  return JSON.parse(Buffer.from(idToken.split('.')[0], 'base64url').toString())
}

async function signedIn(config) {
  const auth = await authorize(config)
  const tokens = await client.authorizationCodeGrant(config, auth.callback, {
    pkceCodeVerifier: auth.verifier,
    expectedState: auth.state,
    expectedNonce: auth.nonce,
    idTokenExpected: true,
  })
  return { auth, tokens }
}

async function main() {
  const version = JSON.parse(
    readFileSync(new URL('./node_modules/openid-client/package.json', import.meta.url)),
  ).version
  const result = { node: process.version, openid_client: version }

  // Discovery (issuer checked by openid-client against the URL it was given).
  const config = await configure(loggingFetch)
  const metadata = config.serverMetadata()
  result.discovery = {
    issuer: metadata.issuer,
    authorization_endpoint: metadata.authorization_endpoint,
    token_endpoint: metadata.token_endpoint,
    jwks_uri: metadata.jwks_uri,
    userinfo_endpoint: metadata.userinfo_endpoint,
    revocation_endpoint: metadata.revocation_endpoint,
    introspection_endpoint: metadata.introspection_endpoint,
    supports_pkce_s256: metadata.supportsPKCE('S256'),
  }

  // Authorization code + PKCE; openid-client validates the id_token (signature via JWKS,
  // iss, aud, exp/iat, nonce) before it returns.
  const { auth, tokens } = await signedIn(config)
  const claims = tokens.claims()
  result.authorization = auth.observed
  result.token = {
    token_type: tokens.token_type,
    expires_in: tokens.expires_in,
    scope: tokens.scope ?? null,
    has_access_token: Boolean(tokens.access_token),
    has_refresh_token: Boolean(tokens.refresh_token),
  }
  result.id_token = {
    header: idTokenHeader(tokens.id_token),
    claims,
    // enableNonRepudiationChecks: the signature was checked with a key from the JWKS.
    signature_checked_via_jwks: requests.includes('GET /oauth/jwks'),
    nonce_matches: claims.nonce === auth.nonce,
    // openid-client checks at_hash only in hybrid/implicit flows; check it here.
    at_hash_matches: claims.at_hash === atHash(tokens.access_token),
  }

  result.userinfo = await client.fetchUserInfo(config, tokens.access_token, claims.sub)
  result.introspection_of_access_token = await client.tokenIntrospection(
    config,
    tokens.access_token,
  )

  // Refresh: the refresh token is rotated.
  const refreshed = await client.refreshTokenGrant(config, tokens.refresh_token)
  result.refresh = {
    token_type: refreshed.token_type,
    has_access_token: Boolean(refreshed.access_token),
    has_refresh_token: Boolean(refreshed.refresh_token),
    refresh_token_rotated:
      Boolean(refreshed.refresh_token) && refreshed.refresh_token !== tokens.refresh_token,
    access_token_renewed: refreshed.access_token !== tokens.access_token,
    id_token_claims: refreshed.id_token ? refreshed.claims() : null,
  }
  result.userinfo_after_refresh = await client.fetchUserInfo(
    config,
    refreshed.access_token,
    claims.sub,
  )

  // Revocation (RFC 7009) of the current refresh token ends the grant; introspection
  // (RFC 7662) then reports both tokens inactive, and neither can be used any more.
  await client.tokenRevocation(config, refreshed.refresh_token, {
    token_type_hint: 'refresh_token',
  })
  result.revocation = { revoked: 'refresh_token' }
  result.introspection_after_revocation = {
    refresh_token: await client.tokenIntrospection(config, refreshed.refresh_token),
    access_token: await client.tokenIntrospection(config, refreshed.access_token),
  }
  result.refresh_after_revocation = await expectFailure(() =>
    client.refreshTokenGrant(config, refreshed.refresh_token),
  )
  result.userinfo_after_revocation = await expectFailure(() =>
    client.fetchUserInfo(config, refreshed.access_token, claims.sub),
  )

  // Reuse of a rotated refresh token: invalid_grant, and the thief's attempt also ends the
  // grant (the newer refresh token stops working).
  const second = await signedIn(config)
  const rotated = await client.refreshTokenGrant(config, second.tokens.refresh_token)
  result.reuse = {
    grant_id: second.tokens.claims().grant_id ?? null,
    first_grant_id: claims.grant_id ?? null,
    refresh_token_rotated: rotated.refresh_token !== second.tokens.refresh_token,
    reuse_of_rotated: await expectFailure(() =>
      client.refreshTokenGrant(config, second.tokens.refresh_token),
    ),
    newer_after_reuse: await expectFailure(() =>
      client.refreshTokenGrant(config, rotated.refresh_token),
    ),
  }

  // A tampered id_token signature is refused: the signature really is checked via JWKS.
  const tampering = await configure(tamperingFetch)
  const third = await authorize(tampering)
  result.tampered_id_token = await expectFailure(() =>
    client.authorizationCodeGrant(tampering, third.callback, {
      pkceCodeVerifier: third.verifier,
      expectedState: third.state,
      expectedNonce: third.nonce,
      idTokenExpected: true,
    }),
  )

  result.requests = requests
  return result
}

try {
  process.stdout.write(`${JSON.stringify(await main())}\n`)
} catch (error) {
  process.stdout.write(`${JSON.stringify({ failure: describeError(error), requests })}\n`)
  process.exitCode = 1
}
