// A real OpenID provider for the sign-in tests: the npm package `oidc-provider` on a free
// loopback port, with the users of tests/oidc/users.json (or OIDC_USERS_FILE).
//
// Started by tests/oidc_support.py. Environment:
//   OIDC_PROVIDER_MODULE  the package's lib/index.js (in the node cache `make test` fills)
//   OIDC_CLIENT_ID, OIDC_CLIENT_SECRET, OIDC_REDIRECT_URIS, OIDC_LOGOUT_REDIRECT_URIS
// Prints one line, `READY <issuer>`, once it listens. Plain http: loopback only, tests only.
//
// Besides the provider's own endpoints it serves:
//   GET/POST /interaction/<uid>    a login form (login, password); consent is given at once
//   POST /_test/users/<id>         replace that user's claims (JSON body), e.g. its groups
//   POST /_test/end-sessions       forget every sign-in here (the provider's session ended)
import { randomBytes, generateKeyPairSync } from 'node:crypto';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import { pathToFileURL } from 'node:url';

const { default: Provider } = await import(pathToFileURL(process.env.OIDC_PROVIDER_MODULE).href);

const usersFile = process.env.OIDC_USERS_FILE || new URL('./users.json', import.meta.url);
const users = JSON.parse(readFileSync(usersFile, 'utf8'));
const list = (name) => (process.env[name] || '').split(',').filter(Boolean);

// Every model the provider stores, in memory, so that /_test/end-sessions can drop sessions.
const stores = new Map();
class MemoryAdapter {
  constructor(name) {
    this.name = name;
    if (!stores.has(name)) stores.set(name, new Map());
    this.store = stores.get(name);
  }
  async upsert(id, payload) { this.store.set(id, { ...payload }); }
  async find(id) { return this.store.get(id); }
  async findByUid(uid) { return [...this.store.values()].find((p) => p.uid === uid); }
  async findByUserCode(code) { return [...this.store.values()].find((p) => p.userCode === code); }
  async consume(id) { const p = this.store.get(id); if (p) p.consumed = Math.floor(Date.now() / 1000); }
  async destroy(id) { this.store.delete(id); }
  async revokeByGrantId(grantId) {
    for (const [id, p] of this.store) if (p.grantId === grantId) this.store.delete(id);
  }
}

const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const jwk = { ...privateKey.export({ format: 'jwk' }), kid: 'test-key', use: 'sig', alg: 'RS256' };

const server = http.createServer();
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const issuer = `http://127.0.0.1:${server.address().port}`;

const provider = new Provider(issuer, {
  adapter: MemoryAdapter,
  clients: [{
    client_id: process.env.OIDC_CLIENT_ID,
    client_secret: process.env.OIDC_CLIENT_SECRET,
    redirect_uris: list('OIDC_REDIRECT_URIS'),
    post_logout_redirect_uris: list('OIDC_LOGOUT_REDIRECT_URIS'),
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_post',
  }],
  jwks: { keys: [jwk] },
  cookies: { keys: [randomBytes(16).toString('hex')] },
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name', 'given_name', 'family_name'],
    groups: ['groups'],
  },
  findAccount: async (ctx, sub) => {
    if (!users[sub]) return undefined;
    return { accountId: sub, claims: async () => ({ sub, ...users[sub].claims }) };
  },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  features: {
    devInteractions: { enabled: false },
    rpInitiatedLogout: {
      enabled: true,
      logoutSource: async (ctx, form) => {
        ctx.body = `<!DOCTYPE html><html><body><h1>Sign out?</h1>${form}`
          + '<button type="submit" form="op.logoutForm" name="logout" value="yes">Yes</button>'
          + '</body></html>';
      },
    },
  },
});

const escape = (text) => String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function loginForm(uid, error = '') {
  return '<!DOCTYPE html><html><body><h1>Test identity provider</h1>'
    + (error ? `<p class="error">${escape(error)}</p>` : '')
    + `<form method="post" action="/interaction/${escape(uid)}">`
    + '<input name="login" id="login"><input name="password" id="password" type="password">'
    + '<button type="submit">Sign in</button></form></body></html>';
}

async function body(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return Buffer.concat(chunks).toString('utf8');
}

function send(res, status, text, type = 'text/html; charset=utf-8') {
  res.writeHead(status, { 'content-type': type });
  res.end(text);
}

// Consent is given at once for whatever the client asked (this is a test provider).
async function finish(req, res, details, accountId) {
  const grant = new provider.Grant({ accountId, clientId: details.params.client_id });
  grant.addOIDCScope(details.params.scope);
  const grantId = await grant.save();
  await provider.interactionFinished(req, res, { login: { accountId }, consent: { grantId } }, {
    mergeWithLastSubmission: false,
  });
}

async function interaction(req, res) {
  const details = await provider.interactionDetails(req, res);
  if (details.prompt.name === 'consent' && details.session) {
    return finish(req, res, details, details.session.accountId);
  }
  if (req.method === 'GET') return send(res, 200, loginForm(details.uid));
  const form = new URLSearchParams(await body(req));
  const user = users[form.get('login')];
  if (!user || user.password !== form.get('password')) {
    return send(res, 200, loginForm(details.uid, 'Wrong login or password.'));
  }
  return finish(req, res, details, form.get('login'));
}

async function control(req, res) {
  const [, , what, id] = req.url.split('/');
  if (what === 'end-sessions') {
    stores.get('Session')?.clear();
    return send(res, 200, '{}', 'application/json');
  }
  if (what === 'users' && users[id]) {
    users[id].claims = JSON.parse(await body(req));
    return send(res, 200, '{}', 'application/json');
  }
  return send(res, 404, '{}', 'application/json');
}

const callback = provider.callback();
server.on('request', (req, res) => {
  let handler = callback;
  if (req.url.startsWith('/interaction/')) handler = interaction;
  else if (req.url.startsWith('/_test/') && req.method === 'POST') handler = control;
  Promise.resolve(handler(req, res)).catch((error) => {
    if (!res.headersSent) send(res, 500, escape(error.stack || error), 'text/plain');
  });
});
process.stdout.write(`READY ${issuer}\n`);
