// node-oidc-provider (v9) as bench/run.py measures it: the comparison for Sensei's token row.
//
// Not committed with its dependency: bench/run.py installs `oidc-provider@9` with npm into a
// scratch directory (~/.cache/sensei-bench/oidc-provider-9) and passes it here as
// OIDC_PROVIDER_DIR. Settings, all from the environment:
//
//   PORT                the port on 127.0.0.1 (required)
//   WORKERS             cluster workers (default 2), like gunicorn's --workers 2
//   CLIENT_ID           the one client: client_credentials, client_secret_basic
//   CLIENT_SECRET
//   SCOPE               the one scope (default "api:read")
//   RESOURCE            the resource indicator every token is for (default "urn:sensei-bench:api")
//
// Tokens: JWT access tokens signed RS256 with a 2048-bit RSA key the primary generates once
// (every worker signs with the same key), through features.resourceIndicators
// (defaultResource -> RESOURCE, getResourceServerInfo -> accessTokenFormat "jwt"). The adapter
// is the built-in in-memory one. The token endpoint is POST /token:
//
//   curl -u "$CLIENT_ID:$CLIENT_SECRET" -d grant_type=client_credentials -d scope=api:read \
//        http://127.0.0.1:$PORT/token
//
// Stopped with SIGTERM (the primary stops its workers, then exits).

import cluster from 'node:cluster';
import crypto from 'node:crypto';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

const env = process.env;
const PORT = Number(env.PORT);
const WORKERS = Number(env.WORKERS || 2);
const SCOPE = env.SCOPE || 'api:read';
const RESOURCE = env.RESOURCE || 'urn:sensei-bench:api';

function fail(message) {
  console.error(`oidc_provider_server: ${message}`);
  process.exit(1);
}

async function loadProvider(dir) {
  const packageDir = path.join(dir, 'node_modules', 'oidc-provider');
  const pkg = JSON.parse(readFileSync(path.join(packageDir, 'package.json'), 'utf8'));
  if (!pkg.version.startsWith('9.')) fail(`oidc-provider ${pkg.version} in ${packageDir}, expected 9.x`);
  const exported = pkg.exports?.['.'];
  const entry = (typeof exported === 'string' ? exported : exported?.import ?? exported?.default)
    ?? pkg.main ?? 'lib/index.js';
  const module = await import(pathToFileURL(path.join(packageDir, entry)).href);
  return { Provider: module.default ?? module.Provider, version: pkg.version };
}

if (!Number.isInteger(PORT) || PORT <= 0) fail('PORT must be set');
if (!env.CLIENT_ID || !env.CLIENT_SECRET) fail('CLIENT_ID and CLIENT_SECRET must be set');
if (!env.OIDC_PROVIDER_DIR) fail('OIDC_PROVIDER_DIR must name the directory oidc-provider@9 is installed in');

if (cluster.isPrimary) {
  const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = { ...privateKey.export({ format: 'jwk' }), alg: 'RS256', use: 'sig', kid: 'bench-1' };
  const cookieKey = crypto.randomBytes(32).toString('base64url');
  let stopping = false;
  let listening = 0;
  for (let i = 0; i < WORKERS; i += 1) {
    cluster.fork({ BENCH_JWK: JSON.stringify(jwk), BENCH_COOKIE_KEY: cookieKey });
  }
  cluster.on('listening', () => {
    listening += 1;
    if (listening === WORKERS) console.log(`oidc-provider: ${WORKERS} workers on 127.0.0.1:${PORT}`);
  });
  cluster.on('exit', (worker, code, signal) => {
    if (!stopping) {
      console.error(`oidc-provider worker ${worker.process.pid} exited (${signal || code}): stopping`);
      stopping = true;
      for (const other of Object.values(cluster.workers)) other.kill();
      process.exitCode = 1;
    }
  });
  const stop = () => {
    stopping = true;
    for (const worker of Object.values(cluster.workers)) worker.kill();
    setTimeout(() => process.exit(0), 5000).unref();
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
} else {
  const { Provider, version } = await loadProvider(env.OIDC_PROVIDER_DIR);
  const issuer = `http://127.0.0.1:${PORT}`;
  const provider = new Provider(issuer, {
    clients: [{
      client_id: env.CLIENT_ID,
      client_secret: env.CLIENT_SECRET,
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
      token_endpoint_auth_method: 'client_secret_basic',
      scope: SCOPE,
    }],
    scopes: [SCOPE],
    jwks: { keys: [JSON.parse(env.BENCH_JWK)] },
    cookies: { keys: [env.BENCH_COOKIE_KEY] },
    ttl: { ClientCredentials: 3600 },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => RESOURCE,
        useGrantedResource: () => true,
        getResourceServerInfo: (_ctx, resourceIndicator) => {
          if (resourceIndicator !== RESOURCE) throw new Error(`unknown resource ${resourceIndicator}`);
          return {
            scope: SCOPE,
            audience: RESOURCE,
            accessTokenTTL: 3600,
            accessTokenFormat: 'jwt',
            jwt: { sign: { alg: 'RS256' } },
          };
        },
      },
    },
  });
  provider.on('server_error', (_ctx, error) => console.error('server_error', error));
  const server = http.createServer(provider.callback());
  server.listen(PORT, '127.0.0.1', () => {
    if (cluster.worker.id === 1) console.log(`oidc-provider ${version}, node ${process.version}`);
  });
  process.on('SIGTERM', () => process.exit(0));
}
