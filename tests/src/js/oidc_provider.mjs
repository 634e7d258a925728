// A real OpenID provider for end-to-end tests: panva's `oidc-provider` (certified), with its
// development interactions (any login name is accepted). It prints its port on its first
// stdout line. `GET /test/id-token?sub=alice&client=client-1` runs the whole authorization code
// flow against the provider's own endpoints (authorize, login, consent, token) and answers the
// ID token the token endpoint issued. Clients: client-1 and client-2 (ID tokens for an hour),
// client-short (ID tokens for one second). Secrets: "<client id>-secret".
import http from 'node:http';
import Provider from 'oidc-provider';

const REDIRECT = 'http://127.0.0.1/cb';
const client = (id) => ({
  client_id: id,
  client_secret: `${id}-secret`,
  redirect_uris: [REDIRECT],
  response_types: ['code'],
  grant_types: ['authorization_code'],
});

const server = http.createServer();
server.listen(0, '127.0.0.1', () => {
  const { port } = server.address();
  const base = `http://127.0.0.1:${port}`;
  const provider = new Provider(base, {
    clients: [client('client-1'), client('client-2'), client('client-short')],
    findAccount: async (ctx, id) => ({ accountId: id, claims: async () => ({ sub: id }) }),
    pkce: { required: () => false },
    ttl: { IdToken: (ctx, token, c) => (c && c.clientId === 'client-short' ? 1 : 3600) },
  });
  provider.proxy = false;
  const handle = provider.callback();
  server.on('request', (req, res) => {
    if (req.url.startsWith('/test/id-token')) {
      const q = new URL(req.url, base).searchParams;
      idToken(base, q.get('sub') || 'alice', q.get('client') || 'client-1')
        .then((t) => { res.writeHead(200, { 'content-type': 'text/plain' }); res.end(t); })
        .catch((e) => { res.writeHead(500); res.end(String(e && e.stack)); });
      return;
    }
    handle(req, res);
  });
  process.stdout.write(`${port}\n`);
  // The test reads one line and closes the pipe: everything else the provider says goes to
  // stderr (it logs notices through console.log).
  process.stdout.on('error', () => {});
  console.log = console.error;
  console.info = console.error;
});

// A cookie jar and redirects by hand: the flow is the one a browser would follow.
async function idToken(base, sub, clientId) {
  const jar = new Map();
  const keep = (res) => {
    for (const c of res.headers.getSetCookie()) {
      const [pair] = c.split(';');
      const i = pair.indexOf('=');
      jar.set(pair.slice(0, i), pair.slice(i + 1));
    }
  };
  const cookie = () => [...jar].map(([k, v]) => `${k}=${v}`).join('; ');
  const go = async (url, init = {}) => {
    const res = await fetch(new URL(url, base), {
      ...init, redirect: 'manual', headers: { ...(init.headers || {}), cookie: cookie() },
    });
    keep(res);
    return res;
  };
  const auth = new URL('/auth', base);
  auth.search = new URLSearchParams({
    client_id: clientId, response_type: 'code', scope: 'openid', redirect_uri: REDIRECT,
    nonce: 'n-0S6_WzA2Mj', state: 'st',
  });
  let res = await go(auth);
  for (let step = 0; step < 10; step += 1) {
    const loc = res.headers.get('location');
    if (!loc) throw new Error(`no redirect at step ${step}: ${res.status} ${await res.text()}`);
    if (loc.startsWith(REDIRECT)) {
      const code = new URL(loc).searchParams.get('code');
      if (!code) throw new Error(`no code: ${loc}`);
      const tok = await fetch(new URL('/token', base), {
        method: 'POST',
        headers: {
          'content-type': 'application/x-www-form-urlencoded',
          authorization: `Basic ${Buffer.from(`${clientId}:${clientId}-secret`).toString('base64')}`,
        },
        body: new URLSearchParams({ grant_type: 'authorization_code', code, redirect_uri: REDIRECT }),
      });
      const body = await tok.json();
      if (!body.id_token) throw new Error(`no id_token: ${JSON.stringify(body)}`);
      return body.id_token;
    }
    const m = loc.match(/\/interaction\/([^/?]+)/);
    if (m) {
      const page = await go(loc);
      const html = await page.text();
      const prompt = html.includes('name="login"') ? 'login' : 'consent';
      const form = new URLSearchParams({ prompt });
      if (prompt === 'login') { form.set('login', sub); form.set('password', 'x'); }
      res = await go(`/interaction/${m[1]}`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: form,
      });
    } else {
      res = await go(loc);
    }
  }
  throw new Error('too many redirects');
}
