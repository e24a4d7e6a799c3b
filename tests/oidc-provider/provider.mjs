// A local OpenID Connect provider for tessera's integration tests, built on
// the `oidc-provider` package. NEVER use it for anything else: every
// authorization request is logged in automatically, without a password.
//
// Environment:
//   PORT                  port on 127.0.0.1 (default 4010); the issuer is http://127.0.0.1:PORT
//   OIDC_REDIRECT_URIS    comma-separated redirect URIs of the test client
//   OIDC_CLIENT_ID        default "tessera-test"
//   OIDC_CLIENT_SECRET    default "tessera-test-secret"
//
// Which account is logged in: the authorization request's `login_hint`
// (default "alice"). The account's claims are
//   sub = "sub-<hint>", preferred_username = <hint>,
//   email = "<hint>@example.test", email_verified = !hint.startsWith("unverified").
//
// Each start generates a fresh RSA signing key with a fresh `kid`, so
// restarting the provider on the same port rotates its keys.
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import Provider from 'oidc-provider';

const port = Number(process.env.PORT || 4010);
const issuer = `http://127.0.0.1:${port}`;
const clientId = process.env.OIDC_CLIENT_ID || 'tessera-test';
const clientSecret = process.env.OIDC_CLIENT_SECRET || 'tessera-test-secret';
const redirectUris = (process.env.OIDC_REDIRECT_URIS || 'http://localhost:3000/auth/oidc/test/callback')
  .split(',')
  .map((uri) => uri.trim())
  .filter(Boolean);

const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: randomBytes(8).toString('hex'), use: 'sig', alg: 'RS256' };

function claimsFor(hint) {
  return {
    sub: `sub-${hint}`,
    preferred_username: hint,
    name: hint,
    email: `${hint}@example.test`,
    email_verified: !hint.startsWith('unverified'),
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
    },
  ],
  jwks: { keys: [signingKey] },
  cookies: { keys: [randomBytes(32).toString('hex')] },
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['preferred_username', 'name'],
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
    if (grantId) return ctx.oidc.provider.Grant.find(grantId);
    const grant = new ctx.oidc.provider.Grant({ clientId: ctx.oidc.client.clientId, accountId: ctx.oidc.session.accountId });
    grant.addOIDCScope('openid email profile');
    await grant.save();
    return grant;
  },
  ttl: { Session: 600, Interaction: 600, Grant: 600, AuthorizationCode: 60, AccessToken: 600, IdToken: 600 },
});

// The "interaction": log in the account named by login_hint, no questions asked.
provider.use(async (ctx, next) => {
  const match = ctx.path.match(/^\/interaction\/([^/]+)$/);
  if (!match || ctx.method !== 'GET') return next();
  const details = await provider.interactionDetails(ctx.req, ctx.res);
  if (details.prompt.name === 'login') {
    const hint = String(details.params.login_hint || 'alice').replace(/[^A-Za-z0-9._-]/g, '');
    await provider.interactionFinished(ctx.req, ctx.res, { login: { accountId: `sub-${hint}` } }, { mergeWithLastSubmission: false });
    ctx.respond = false;
    return undefined;
  }
  // loadExistingGrant answers consent; anything else is unexpected here.
  ctx.status = 400;
  ctx.body = `unexpected prompt ${details.prompt.name}`;
  return undefined;
});

const server = provider.listen(port, '127.0.0.1', () => {
  console.log(`oidc test provider listening on ${issuer} (client ${clientId})`);
});
const stop = () => server.close(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
