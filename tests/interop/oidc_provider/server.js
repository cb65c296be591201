// An independent authorization server for ccflow's integration tests: panva's oidc-provider
// (OpenID Certified), configured for the client-credentials grant with resource indicators so
// that it issues RS256 JWT access tokens shaped enough like Azure AD's for ccflow to use.
//
// Usage: CCFLOW_OIDC_TESTBED='<json>' node server.js [port]
//   json: {"resource": "api://calc-api",
//          "clients": [{"client_id": "...", "client_secret": "...",
//                       "token_endpoint_auth_method": "client_secret_post", "roles": ["..."]}]}
//   port: 0 (the default) picks a free one.
// Listens on 127.0.0.1 only, over plain http (loopback), and prints one JSON line once it
// accepts connections: {"issuer": ..., "token_endpoint": ..., "jwks_uri": ..., "port": ...}.
// Stops on SIGTERM/SIGINT, and when its stdin closes, so it never outlives the test that
// started it even if that test is killed.

import { generateKeyPairSync, randomBytes, randomUUID } from 'node:crypto';
import { createServer } from 'node:http';
import process from 'node:process';

import Provider, { errors } from 'oidc-provider';

const HOST = '127.0.0.1';
const DEFAULT_SUFFIX = '/.default';

function fail(message) {
  process.stderr.write(`oidc-provider testbed: ${message}\n`);
  process.exit(2);
}

function readConfig() {
  const raw = process.env.CCFLOW_OIDC_TESTBED;
  if (!raw) fail('set CCFLOW_OIDC_TESTBED to the JSON configuration (see the header of server.js)');
  let config;
  try {
    config = JSON.parse(raw);
  } catch (err) {
    fail(`CCFLOW_OIDC_TESTBED is not JSON: ${err.message}`);
  }
  if (typeof config.resource !== 'string' || !Array.isArray(config.clients)) {
    fail('CCFLOW_OIDC_TESTBED needs a "resource" string and a "clients" list');
  }
  return config;
}

function signingKeys() {
  // A fresh key per run: nothing secret is committed, and tests cannot depend on a fixed key.
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = privateKey.export({ format: 'jwk' });
  return { keys: [{ ...jwk, kid: randomUUID(), alg: 'RS256', use: 'sig' }] };
}

function resourceFromScope(scope) {
  // Azure AD's client-credentials flow names the API in the scope as `<resource>/.default`
  // (AADSTS1002012 otherwise), and ccflow sends exactly that. oidc-provider speaks RFC 8707
  // instead: the API is the `resource` parameter and scopes are the API's own. This is the
  // bridge: `defaultResource` is oidc-provider's hook for "the client sent no resource, which
  // one applies?", called with the parsed request, so answering it from the `.default` scope
  // needs no body rewriting and no reach into the provider's internals. The `.default` scope
  // itself stays in the request and is dropped by the provider, since it is not one of the
  // resource server's scopes. Like Azure AD, a request without exactly one `.default` scope is
  // refused with invalid_scope.
  const defaults = (scope ?? '').split(' ').filter((s) => s.endsWith(DEFAULT_SUFFIX));
  if (defaults.length !== 1) {
    throw new errors.InvalidScope(
      `the scope must be exactly one <resource>${DEFAULT_SUFFIX}`,
      scope ?? '',
    );
  }
  return defaults[0].slice(0, -DEFAULT_SUFFIX.length);
}

const config = readConfig();
const rolesByClient = new Map(config.clients.map((c) => [c.client_id, c.roles ?? []]));
const authMethodByClient = new Map(
  config.clients.map((c) => [c.client_id, c.token_endpoint_auth_method]),
);

function assertRegisteredAuthMethod(ctx, clientId) {
  // oidc-provider accepts a client secret sent either way, whichever of client_secret_basic
  // and client_secret_post the client registered. Here the tests must prove which one ccflow
  // used, so a token is issued only when the secret came the registered way. This hook is the
  // first point that sees the authenticated client and the request together.
  const used = ctx.headers.authorization === undefined ? 'client_secret_post' : 'client_secret_basic';
  if (used !== authMethodByClient.get(clientId)) {
    throw new errors.InvalidClientAuth(`${clientId} must authenticate with its registered method`);
  }
}

const server = createServer();
server.listen({ host: HOST, port: Number(process.argv[2] ?? 0) }, () => {
  // The issuer carries the port, so the provider is built once the port is known; nobody can
  // reach the server before the line below tells them where it is.
  const { port } = server.address();
  const issuer = `http://${HOST}:${port}`;

  const provider = new Provider(issuer, {
    clients: config.clients.map((c) => ({
      client_id: c.client_id,
      client_secret: c.client_secret,
      token_endpoint_auth_method: c.token_endpoint_auth_method,
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
    })),
    jwks: signingKeys(),
    cookies: { keys: [randomBytes(32).toString('base64url')] },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: async (ctx, _client, oneOf) => {
          if (oneOf) return oneOf;
          if (ctx.oidc.params?.grant_type !== 'client_credentials') return undefined;
          return resourceFromScope(ctx.oidc.params.scope);
        },
        // Only the authorization-code and refresh flows consult this; none is enabled here.
        useGrantedResource: async () => true,
        getResourceServerInfo: async (_ctx, resource) => {
          if (resource !== config.resource) {
            throw new errors.InvalidTarget(`unknown resource: ${resource}`);
          }
          return {
            // App-only tokens carry roles, not scopes (as in Azure AD).
            scope: '',
            audience: config.resource,
            accessTokenTTL: 3599,
            accessTokenFormat: 'jwt',
            jwt: { sign: { alg: 'RS256' } },
          };
        },
      },
    },
    // Azure AD's v2 names for the caller and its app roles; RFC 9068's client_id stays too.
    extraTokenClaims: async (ctx, token) => {
      if (token.kind !== 'ClientCredentials') return undefined;
      assertRegisteredAuthMethod(ctx, token.clientId);
      const roles = rolesByClient.get(token.clientId) ?? [];
      return roles.length ? { azp: token.clientId, roles } : { azp: token.clientId };
    },
  });

  server.on('request', provider.callback());
  process.stdout.write(
    `${JSON.stringify({
      issuer,
      port,
      token_endpoint: `${issuer}/token`,
      jwks_uri: `${issuer}/jwks`,
      discovery_url: `${issuer}/.well-known/openid-configuration`,
    })}\n`,
  );
});

function stop() {
  server.closeAllConnections();
  server.close(() => process.exit(0));
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
process.stdin.on('end', stop);
process.stdin.resume();
