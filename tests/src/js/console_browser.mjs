// Drives the fleet console in headless chromium as an operator would (tests/src/browser.rs).
// Reads one JSON document on stdin:
//   origin        the control plane's management API, http://127.0.0.1:<port>
//   secret        the admin secret; wrong_secret one the control plane does not accept
//   api_name, policy_name, xss_name   names the tables must show
//   nodes         [{id, group}] of the edges that must show connected with no revision lag
//   nacked        [{id}] of the edges that must show a NACK
//   key_hash      the key to look up and revoke
//   chromium      the browser binary; screenshot (optional) where to save a picture of the page
// Prints one JSON document of what the page showed; the Rust test asserts on it.
import { chromium } from 'playwright-core';

const chunks = [];
for await (const c of process.stdin) chunks.push(c);
const input = JSON.parse(Buffer.concat(chunks).toString('utf8'));
const WAIT = { timeout: 30000 };

const browser = await chromium.launch({ executablePath: input.chromium, headless: true });
const out = { requests: [], console: [], page_errors: [], dialogs: [] };
let page = null;
let failed = false;
try {
  const context = await browser.newContext();
  page = await context.newPage();
  page.on('request', (r) => out.requests.push(r.url()));
  page.on('console', (m) => out.console.push(`${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => out.page_errors.push(String(e)));
  page.on('dialog', (d) => {
    out.dialogs.push(d.message());
    d.accept();
  });

  const text = (sel) => page.evaluate((s) => document.querySelector(s)?.textContent ?? null, sel);
  const rows = (sel) => page.evaluate((s) => [...document.querySelectorAll(`${s} tbody tr`)]
    .filter((tr) => !tr.querySelector('td.empty'))
    .map((tr) => [...tr.cells].map((td) => td.textContent)), sel);
  const stored = () => page.evaluate(() => sessionStorage.getItem('portcullis.console.secret'));
  const errorShown = () => page.waitForFunction(() => {
    const e = document.getElementById('error');
    return !e.hidden && e.textContent.length > 0;
  }, null, WAIT);

  // The shell, before any secret.
  const resp = await page.goto(`${input.origin}/console`);
  const headers = resp.headers();
  out.page = {
    status: resp.status(),
    content_type: headers['content-type'] ?? null,
    csp: headers['content-security-policy'] ?? null,
    frame_options: headers['x-frame-options'] ?? null,
    title: await page.title(),
    status_text: await text('#status'),
  };

  // Connect without a secret: the data calls go out without one and are refused.
  await page.click('#connect');
  await errorShown();
  out.without_secret = { error: await text('#error'), status: await text('#status'), apis: await rows('#apis') };

  // A wrong secret, on a fresh load.
  await page.goto(`${input.origin}/console`);
  await page.fill('#secret', input.wrong_secret);
  await page.click('#connect');
  await errorShown();
  out.wrong_secret = {
    error: await text('#error'), status: await text('#status'), apis: await rows('#apis'), stored: await stored(),
  };

  // The right one.
  await page.goto(`${input.origin}/console`);
  await page.fill('#secret', input.secret);
  await page.click('#connect');
  await page.waitForFunction((want) => {
    const cells = (sel) => [...document.querySelectorAll(`${sel} td`)].map((td) => td.textContent);
    const apis = cells('#apis');
    if (!apis.includes(want.api_name) || !apis.includes(want.xss_name)) return false;
    if (!cells('#policies').includes(want.policy_name)) return false;
    for (const n of want.nodes) {
      const tr = document.querySelector(`tr[data-node-id="${n.id}"]`);
      if (!tr || tr.cells[3].textContent !== 'connected' || tr.cells[5].textContent !== '0') return false;
      const counted = [...document.querySelectorAll(`figure.chart[data-group="${n.group}"] rect.bar`)]
        .reduce((sum, r) => sum + Number(r.getAttribute('data-count')), 0);
      if (counted === 0) return false;
    }
    for (const n of want.nacked) {
      const tr = document.querySelector(`tr[data-node-id="${n.id}"]`);
      if (!tr || !tr.cells[6].textContent.startsWith('revision ')) return false;
    }
    return true;
  }, input, WAIT);
  out.connected = {
    status: await text('#status'),
    error_hidden: await page.evaluate(() => document.getElementById('error').hidden),
    stored_matches: (await stored()) === input.secret,
    secret_field_empty: (await page.inputValue('#secret')) === '',
  };
  out.apis = await rows('#apis');
  out.policies = await rows('#policies');
  out.node_groups = await page.evaluate(() => [...document.querySelectorAll('table.nodes')].map((t) => ({
    group: t.getAttribute('data-group'),
    heading: t.previousElementSibling?.textContent ?? null,
    header: [...t.tHead.rows[0].cells].map((th) => th.textContent),
    rows: [...t.tBodies[0].rows].map((tr) => [...tr.cells].map((td) => td.textContent)),
  })));
  out.charts = await page.evaluate(() => [...document.querySelectorAll('figure.chart')].map((f) => ({
    group: f.getAttribute('data-group'),
    caption: f.querySelector('figcaption')?.textContent ?? null,
    is_svg: f.querySelector('svg') instanceof SVGSVGElement,
    counts: [...f.querySelectorAll('rect.bar')].map((r) => Number(r.getAttribute('data-count'))),
    heights: [...f.querySelectorAll('rect.bar')].map((r) => r.getBBox().height),
    labels: [...f.querySelectorAll('text.label')].map((t) => t.textContent),
  })));
  out.xss = await page.evaluate((name) => ({
    shown_as_text: [...document.querySelectorAll('#apis td')].some((td) => td.textContent === name),
    images: document.querySelectorAll('img').length,
    fired: window.__pwned !== undefined,
  }), input.xss_name);
  if (input.screenshot) await page.screenshot({ path: input.screenshot, fullPage: true });

  // Keys: a malformed hash, then the real one, then revoke it.
  await page.fill('#key-hash', 'not-a-hash');
  await page.click('#key-find');
  await page.waitForFunction(() => document.getElementById('key-status').textContent.length > 0, null, WAIT);
  out.malformed_hash = await text('#key-status');
  await page.fill('#key-hash', input.key_hash.toUpperCase());
  await page.click('#key-find');
  await page.waitForFunction(() => !document.getElementById('key-result').hidden, null, WAIT);
  out.key = await page.evaluate(() => {
    const d = {};
    for (const dt of document.querySelectorAll('#key-details dt')) d[dt.textContent] = dt.nextElementSibling.textContent;
    return d;
  });
  await page.click('#revoke');
  await page.waitForFunction(() => /revoked/.test(document.getElementById('key-status').textContent), null, WAIT);
  out.revoked = {
    status: await text('#key-status'),
    details_hidden: await page.evaluate(() => document.getElementById('key-result').hidden),
  };
  await page.click('#key-find');
  await page.waitForFunction(() => /^No key/.test(document.getElementById('key-status').textContent), null, WAIT);
  out.lookup_after_revoke = await text('#key-status');

  // A reload in the same tab reconnects; Forget ends that.
  await page.reload();
  await page.waitForFunction(() => /^Connected/.test(document.getElementById('status').textContent), null, WAIT);
  out.reloaded = { status: await text('#status'), apis: (await rows('#apis')).length };
  await page.click('#forget');
  out.forgotten = { status: await text('#status'), stored: await stored(), apis: (await rows('#apis')).length };
  out.final_url = page.url();
} catch (e) {
  // What the page showed when a step gave up, for the test's failure message.
  failed = true;
  out.failure = String(e && e.message || e);
  out.page_text = page ? await page.innerText('body').catch(() => null) : null;
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify(out, null, failed ? 1 : 0));
process.exitCode = failed ? 1 : 0;
