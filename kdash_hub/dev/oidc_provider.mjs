// A real OpenID Connect provider (panva oidc-provider 9) for the demo and the tests.
//
// Usage: node oidc_provider.mjs CONFIG.json
// CONFIG: {port, issuer, admin_token, clients: [...oidc-provider client metadata],
//          users: {sub: {password, claims: {...}}}, ttl: {AccessToken, IdToken, ...}}
// Prints "READY <issuer>" when listening. The login form at /interaction/<uid> checks the
// users' passwords; PUT /_admin/users (header x-admin-token) replaces the users at run time
// so tests can remove a user or a group and watch the next refresh notice it.
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import { createRequire } from 'node:module';
import { fileURLToPath, pathToFileURL } from 'node:url';
import path from 'node:path';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const here = path.dirname(fileURLToPath(import.meta.url));
const modulesDir = config.node_modules || path.resolve(here, '..', '..', 'node_modules');
const require = createRequire(path.join(modulesDir, 'noop.js'));
const { default: Provider } = await import(pathToFileURL(require.resolve('oidc-provider')).href);

let users = config.users || {};

const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const jwk = { ...privateKey.export({ format: 'jwk' }), kid: randomBytes(8).toString('hex'), use: 'sig', alg: 'RS256' };

const escapeHtml = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

const provider = new Provider(config.issuer, {
  clients: config.clients,
  jwks: { keys: [jwk] },
  cookies: { keys: [randomBytes(16).toString('hex')] },
  clockTolerance: 0,
  claims: {
    openid: ['sub'],
    profile: ['preferred_username', 'name'],
    email: ['email', 'email_verified'],
    groups: ['groups'],
  },
  scopes: ['openid', 'offline_access', 'profile', 'email', 'groups'],
  features: {
    devInteractions: { enabled: false },
    // RP-initiated logout (end_session_endpoint); pages without the default's web fonts
    rpInitiatedLogout: {
      enabled: true,
      logoutSource: async (ctx, form) => { ctx.body = logoutPage(form); },
      postLogoutSuccessSource: async (ctx) => { ctx.body = page('<p id="signed-out">Signed out.</p>'); },
    },
  },
  ttl: {
    AccessToken: 600, IdToken: 600, RefreshToken: 86400, Grant: 86400,
    Interaction: 600, Session: 86400, AuthorizationCode: 60, ...(config.ttl || {}),
  },
  // refresh tokens for every client allowed to use them, without needing prompt=consent
  issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),
  async findAccount(ctx, sub) {
    const user = users[sub];
    if (!user) return undefined;
    return { accountId: sub, async claims() { return { sub, ...user.claims }; } };
  },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
});
provider.proxy = false;

function page(body) {
  return `<!doctype html><html><head><title>Test IdP</title></head><body><h1>Test IdP</h1>${body}</body></html>`;
}

function logoutPage(form) {
  return page(`<p>Sign out of the Test IdP?</p>${form}
<button id="logout-yes" type="submit" form="op.logoutForm" value="yes" name="logout">Yes, sign me out</button>
<button id="logout-no" type="submit" form="op.logoutForm">No, stay signed in</button>`);
}

function loginPage(uid, error) {
  return `<!doctype html><html><head><title>Test IdP sign-in</title></head><body>
<h1>Test IdP</h1>${error ? `<p id="error">${escapeHtml(error)}</p>` : ''}
<form method="post" action="/interaction/${escapeHtml(uid)}">
<label>User <input id="login" name="login" autofocus></label>
<label>Password <input id="password" name="password" type="password"></label>
<button id="submit" type="submit">Sign in</button></form></body></html>`;
}

async function readBody(req) {
  const chunks = [];
  for await (const c of req) chunks.push(c);
  return Buffer.concat(chunks).toString('utf8');
}

async function interaction(req, res, uid) {
  const details = await provider.interactionDetails(req, res);
  if (req.method === 'GET') {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    res.end(loginPage(uid));
    return;
  }
  const form = new URLSearchParams(await readBody(req));
  const login = form.get('login') || '';
  const user = users[login];
  if (!user || user.password !== form.get('password')) {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    res.end(loginPage(uid, 'Invalid user or password'));
    return;
  }
  const grant = new provider.Grant({ accountId: login, clientId: details.params.client_id });
  grant.addOIDCScope(String(details.params.scope || 'openid'));
  const grantId = await grant.save();
  await provider.interactionFinished(req, res, {
    login: { accountId: login }, consent: { grantId },
  }, { mergeWithLastSubmission: false });
}

const callback = provider.callback();
const server = http.createServer(async (req, res) => {
  try {
    const url = new URL(req.url, config.issuer);
    const m = url.pathname.match(/^\/interaction\/([^/]+)$/);
    if (m) return await interaction(req, res, m[1]);
    if (url.pathname === '/_admin/users' && req.method === 'PUT') {
      if (req.headers['x-admin-token'] !== config.admin_token) {
        res.writeHead(403); return res.end('forbidden');
      }
      users = JSON.parse(await readBody(req));
      res.writeHead(204); return res.end();
    }
    return callback(req, res);
  } catch (err) {
    console.error(err);
    if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain' });
    res.end(String(err && err.message));
  }
});
server.listen(config.port, '127.0.0.1', () => console.log(`READY ${config.issuer}`));
process.on('SIGTERM', () => server.close(() => process.exit(0)));
