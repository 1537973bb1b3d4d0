// A relying party built on panva's openid-client (v6), for tests/test_relying_parties.py.
//
// Not committed with its dependency: the test installs tests/rp/package.json (openid-client,
// pinned, with its lock) by `npm ci` into ~/.cache/sensei-tests/openid-client-6 and passes
// that directory as OPENID_CLIENT_DIR. Settings, all from the environment:
//
//   ISSUER               the provider's issuer (http on loopback: allowInsecureRequests)
//   CLIENT_ID            a confidential client (client_secret_post, the library's default)
//   CLIENT_SECRET
//   REDIRECT_URI         registered for the client
//   POST_LOGOUT_URI      registered as a post-logout redirect URI
//   SCOPE                e.g. "openid profile email migrations:read"
//
// The conversation is one JSON object per line. This script prints
// {"authorization_url": ...}; the test plays the person and writes back the URL the browser
// was sent to (the callback, with code, state and iss). The script redeems the code with
// PKCE (authorizationCodeGrant checks state, iss, the ID token's signature against the JWKS,
// iss, aud, exp, iat and nonce), fetches UserInfo for the ID token's subject, refreshes once
// and prints {"claims", "userinfo", "refreshed_claims", ...}. Any failure is printed on
// stderr and the exit status is 1.

import { createHash } from 'node:crypto';
import { createRequire } from 'node:module';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { pathToFileURL } from 'node:url';

const env = process.env;
const TIMEOUT_S = 10; // every HTTP request the library makes gives up after this

function fail(message) {
  console.error(`openid_client_flow: ${message}`);
  process.exit(1);
}

async function loadOpenIdClient(dir) {
  const require = createRequire(path.join(dir, 'package.json'));
  const { version } = require('openid-client/package.json');
  if (!version.startsWith('6.')) fail(`openid-client ${version} in ${dir}, expected 6.x`);
  return { client: await import(pathToFileURL(require.resolve('openid-client')).href), version };
}

function say(message) {
  process.stdout.write(`${JSON.stringify(message)}\n`);
}

function atHash(accessToken) {
  // OIDC Core §3.1.3.6: the left half of SHA-256 (RS256) of the access token, base64url.
  return createHash('sha256').update(accessToken).digest().subarray(0, 16).toString('base64url');
}

function describe(error) {
  // openid-client wraps oauth4webapi's errors: the reason is in the chain of causes.
  const parts = [];
  for (let at = error; at; at = at.cause) {
    if (!(at instanceof Error)) {
      parts.push(`cause: ${JSON.stringify(at)}`);
      break;
    }
    parts.push(`${at.name}: ${at.message}${at.code ? ` (${at.code})` : ''}`);
    if (at.error) parts.push(`error=${at.error} ${at.error_description ?? ''}`.trim());
  }
  return parts.join(' <- ');
}

async function main() {
  for (const name of ['OPENID_CLIENT_DIR', 'ISSUER', 'CLIENT_ID', 'CLIENT_SECRET', 'REDIRECT_URI',
    'POST_LOGOUT_URI', 'SCOPE']) {
    if (!env[name]) fail(`${name} must be set`);
  }
  const { client, version } = await loadOpenIdClient(env.OPENID_CLIENT_DIR);
  const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();

  const config = await client.discovery(new URL(env.ISSUER), env.CLIENT_ID, env.CLIENT_SECRET, undefined, {
    execute: [client.allowInsecureRequests], timeout: TIMEOUT_S,
  });
  const codeVerifier = client.randomPKCECodeVerifier();
  const nonce = client.randomNonce();
  const state = client.randomState();
  const authorizationUrl = client.buildAuthorizationUrl(config, {
    redirect_uri: env.REDIRECT_URI,
    scope: env.SCOPE,
    code_challenge: await client.calculatePKCECodeChallenge(codeVerifier),
    code_challenge_method: 'S256',
    nonce,
    state,
  });
  say({ authorization_url: authorizationUrl.href, nonce, state, openid_client: version });

  const { value: callback, done } = await lines.next();
  if (done) fail('stdin closed before the callback URL arrived');
  const tokens = await client.authorizationCodeGrant(config, new URL(callback.trim()), {
    pkceCodeVerifier: codeVerifier, expectedNonce: nonce, expectedState: state, idTokenExpected: true,
  });
  const claims = tokens.claims();
  const userinfo = await client.fetchUserInfo(config, tokens.access_token, claims.sub);
  const refreshed = await client.refreshTokenGrant(config, tokens.refresh_token);
  const refreshedClaims = refreshed.claims();
  const endSessionUrl = client.buildEndSessionUrl(config, {
    id_token_hint: refreshed.id_token, post_logout_redirect_uri: env.POST_LOGOUT_URI, state: 'signed-out',
  });
  say({
    claims,
    userinfo,
    token_type: tokens.token_type,
    scope: tokens.scope,
    expires_in: tokens.expiresIn(),
    at_hash_matches: claims.at_hash === atHash(tokens.access_token),
    refresh_rotated: Boolean(refreshed.refresh_token) && refreshed.refresh_token !== tokens.refresh_token,
    refreshed_claims: refreshedClaims,
    refreshed_at_hash_matches: refreshedClaims?.at_hash === atHash(refreshed.access_token),
    end_session_url: endSessionUrl.href,
  });
  process.exit(0); // stdin stays open: the test closes it only when it is done with us
}

main().catch((error) => fail(describe(error)));
