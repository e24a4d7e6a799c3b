// A local OpenID Connect provider for tessera's integration tests, built on
// the `oidc-provider` package. NEVER use it for anything else: its login
// form takes any account name, without a password.
//
// Environment:
//   PORT                    port on 127.0.0.1 (default 4010); the issuer is http://127.0.0.1:PORT
//   OIDC_REDIRECT_URIS      comma-separated redirect URIs of the test client
//   OIDC_CLIENT_ID          default "tessera-test"
//   OIDC_CLIENT_SECRET      default "tessera-test-secret"
//   OIDC_REQUIRE_AUTH_TIME  "0" to leave `auth_time` out of ID tokens unless
//                           the request asks for it (max_age, prompt=login);
//                           by default every ID token carries it
//
// Logging in: when the provider needs a login (no session here yet, or one
// older than the request's `max_age`), GET /interaction/<uid> shows a form
// whose `login` field is prefilled with the request's `login_hint` (default
// "alice"); POST it to log that account in. A browser that keeps this
// provider's cookies stays signed in (single sign-on) and later requests
// answer without the form. The account's claims are
//   sub = "sub-<login>", preferred_username = <login>,
//   email = "<login>@example.test", email_verified = !login.startsWith("unverified"),
//   groups (scope `groups`) = ["staff", "Wiki Editors"] for logins starting with "staff".
//
// The clock: POST /__test/clock?advance=SECONDS moves this provider's clock
// (Date.now, used for auth_time, iat/exp and every expiry) forward, so tests
// can age its sessions together with tessera's manual clock.
//
// Each start generates a fresh RSA signing key with a fresh `kid`, so
// restarting the provider on the same port rotates its keys.
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import Provider from 'oidc-provider';

let clockOffsetMs = 0;
const realNow = Date.now.bind(Date);
Date.now = () => realNow() + clockOffsetMs;

const port = Number(process.env.PORT || 4010);
const issuer = `http://127.0.0.1:${port}`;
const clientId = process.env.OIDC_CLIENT_ID || 'tessera-test';
const clientSecret = process.env.OIDC_CLIENT_SECRET || 'tessera-test-secret';
const redirectUris = (process.env.OIDC_REDIRECT_URIS || 'http://localhost:3000/auth/oidc/test/callback')
  .split(',')
  .map((uri) => uri.trim())
  .filter(Boolean);
const requireAuthTime = process.env.OIDC_REQUIRE_AUTH_TIME !== '0';

const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: randomBytes(8).toString('hex'), use: 'sig', alg: 'RS256' };

function claimsFor(hint) {
  return {
    sub: `sub-${hint}`,
    preferred_username: hint,
    name: hint,
    email: `${hint}@example.test`,
    email_verified: !hint.startsWith('unverified'),
    // Only with the `groups` scope; "Wiki Editors" is not a valid group name.
    groups: hint.startsWith('staff') ? ['staff', 'Wiki Editors'] : [],
  };
}

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: clientId,
      client_secret: clientSecret,
      redirect_uris: redirectUris,
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
      require_auth_time: requireAuthTime,
    },
  ],
  jwks: { keys: [signingKey] },
  cookies: { keys: [randomBytes(32).toString('hex')] },
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['preferred_username', 'name'],
    groups: ['groups'],
  },
  pkce: { required: () => true },
  features: { devInteractions: { enabled: false } },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  async findAccount(ctx, id) {
    const hint = id.replace(/^sub-/, '');
    return { accountId: id, claims: async () => claimsFor(hint) };
  },
  // A first-party test client: every requested scope and claim is granted.
  async loadExistingGrant(ctx) {
    const grantId = ctx.oidc.result?.consent?.grantId || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    const existing = grantId && (await ctx.oidc.provider.Grant.find(grantId));
    if (existing) return existing;
    const grant = new ctx.oidc.provider.Grant({ clientId: ctx.oidc.client.clientId, accountId: ctx.oidc.session.accountId });
    grant.addOIDCScope('openid email profile groups');
    await grant.save();
    return grant;
  },
  // Sessions outlive the clock jumps the tests make (tessera's window is
  // ten minutes); max_age, not expiry, is what makes the provider ask again.
  ttl: { Session: 86400, Interaction: 600, Grant: 86400, AuthorizationCode: 60, AccessToken: 600, IdToken: 600 },
});

async function formBody(req) {
  let body = '';
  for await (const chunk of req) body += chunk;
  return new URLSearchParams(body);
}

const accountName = (value) => String(value || 'alice').replace(/[^A-Za-z0-9._-]/g, '');

provider.use(async (ctx, next) => {
  // The test clock.
  if (ctx.path === '/__test/clock' && ctx.method === 'POST') {
    clockOffsetMs += 1000 * Number(ctx.query.advance || 0);
    ctx.body = { offset_seconds: clockOffsetMs / 1000 };
    return undefined;
  }
  // The "interaction": a login form for any account name, no password.
  const match = ctx.path.match(/^\/interaction\/([^/]+)(\/login)?$/);
  if (!match) return next();
  const details = await provider.interactionDetails(ctx.req, ctx.res);
  if (details.prompt.name !== 'login') {
    // loadExistingGrant answers consent; anything else is unexpected here.
    ctx.status = 400;
    ctx.body = `unexpected prompt ${details.prompt.name}`;
    return undefined;
  }
  if (ctx.method === 'GET' && !match[2]) {
    const hint = accountName(details.params.login_hint);
    ctx.type = 'html';
    ctx.body = `<!doctype html><title>Test provider login</title>
<form method="post" action="/interaction/${match[1]}/login" id="login-form">
<input name="login" value="${hint}"><button>Log in</button></form>`;
    return undefined;
  }
  if (ctx.method === 'POST' && match[2]) {
    const login = accountName((await formBody(ctx.req)).get('login'));
    await provider.interactionFinished(ctx.req, ctx.res, { login: { accountId: `sub-${login}` } }, { mergeWithLastSubmission: false });
    ctx.respond = false;
    return undefined;
  }
  return next();
});

const server = provider.listen(port, '127.0.0.1', () => {
  console.log(`oidc test provider listening on ${issuer} (client ${clientId})`);
});
const stop = () => server.close(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
