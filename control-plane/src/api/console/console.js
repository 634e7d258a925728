// The fleet console (docs/console.md). Every figure comes from the management API, called with
// the admin secret the operator typed; the secret stays in this tab's sessionStorage, goes only
// into the X-Tyk-Authorization header, and is never put in a URL or printed.
//
// Everything from the API is untrusted text (an API's name is whatever its author wrote): it
// reaches the page through text nodes and attribute values only, never as markup.
'use strict';

const SECRET_KEY = 'portcullis.console.secret';
const REFRESH_MS = 5000;
const SVG_NS = "http://www.w3.org/2000/svg";

let secret = null;
let refreshTimer = null;
let lookedUp = null;
// Bumped at each connect and disconnect: an answer to an older secret's call is dropped.
let generation = 0;

const $ = (id) => document.getElementById(id);

/// An element with attributes and children (strings become text nodes).
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  for (const c of children) e.append(c instanceof Node ? c : String(c ?? ''));
  return e;
}

function svg(tag, attrs, text) {
  const e = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = String(text);
  return e;
}

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/// One call of the management API; its JSON answer, or an ApiError with Tyk's message.
async function api(method, path) {
  const headers = { Accept: 'application/json' };
  // An empty secret is sent as none: the control plane says what it thinks of that.
  if (secret) headers['X-Tyk-Authorization'] = secret;
  let resp;
  try {
    resp = await fetch(path, { method, headers, credentials: 'omit', cache: 'no-store', redirect: 'error' });
  } catch (e) {
    throw new ApiError(0, 'the control plane did not answer (' + e.message + ')');
  }
  let body = null;
  try {
    body = await resp.json();
  } catch (_) {
    body = null;
  }
  if (!resp.ok) {
    const message = body && typeof body.message === 'string' ? body.message : resp.statusText;
    throw new ApiError(resp.status, message);
  }
  return body;
}

function showError(text) {
  const e = $('error');
  e.textContent = text;
  e.hidden = !text;
}

function refused(e) {
  return e.status ? `The control plane refused the request (${e.status}): ${e.message}` : `Error: ${e.message}`;
}

// ---- formatting -------------------------------------------------------------------------------

function utc(iso) {
  if (!iso) return '—';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  return d.toISOString().slice(0, 16).replace('T', ' ') + ' UTC';
}

function relative(iso) {
  const ms = new Date(iso).getTime() - Date.now();
  if (Number.isNaN(ms)) return '';
  const mins = Math.round(Math.abs(ms) / 60000);
  const span = mins < 120 ? `${mins} min` : mins < 2880 ? `${Math.round(mins / 60)} h` : `${Math.round(mins / 1440)} d`;
  return ms >= 0 ? `in ${span}` : `${span} ago`;
}

function seconds(s) {
  if (s < 1) return `${+(s * 1000).toPrecision(3)} ms`;
  return `${+s.toPrecision(3)} s`;
}

function nack(n) {
  if (!n || typeof n !== 'object') return '—';
  const ids = Array.isArray(n.resource_ids) && n.resource_ids.length ? ` [${n.resource_ids.join(', ')}]` : '';
  return `revision ${n.revision} at ${utc(n.at)}: ${n.error}${ids}`;
}

function cell(text, cls) {
  return el('td', cls ? { class: cls } : {}, text);
}

function fillTable(id, rows) {
  const body = $(id).tBodies[0];
  body.replaceChildren(...rows);
  if (!rows.length) {
    const cols = $(id).tHead.rows[0].cells.length;
    body.append(el('tr', {}, el('td', { colspan: cols, class: 'empty' }, 'None.')));
  }
}

// ---- sections ---------------------------------------------------------------------------------

function renderApis(apis) {
  const sorted = [...apis].sort((a, b) => String(a.name).localeCompare(String(b.name)));
  fillTable('apis', sorted.map((a) => el('tr', { 'data-api-id': a.api_id ?? '' },
    cell(a.name), cell(a.api_id), cell(a.proxy && a.proxy.listen_path),
    cell(a.active === false ? 'no' : 'yes'), cell(a.org_id))));
}

function renderPolicies(policies) {
  const sorted = [...policies].sort((a, b) => String(a.name).localeCompare(String(b.name)));
  fillTable('policies', sorted.map((p) => {
    const id = p.id || p._id || '';
    const apis = Object.keys(p.access_rights || {}).sort().join(', ');
    const rate = p.rate ? `${p.rate} / ${p.per} s` : 'unlimited';
    const quota = p.quota_max > 0 ? `${p.quota_max} / ${p.quota_renewal_rate} s` : 'unlimited';
    return el('tr', { 'data-policy-id': id }, cell(p.name), cell(id), cell(apis || '—'),
      cell(rate), cell(quota), cell(p.active === false || p.is_inactive ? 'no' : 'yes'));
  }));
}

function nodeState(n) {
  if (n.revoked) return 'revoked';
  return n.connected ? 'connected' : 'disconnected';
}

function renderNodes(nodes) {
  const box = $('nodes');
  const groups = new Map();
  for (const n of nodes) {
    if (!groups.has(n.group)) groups.set(n.group, []);
    groups.get(n.group).push(n);
  }
  if (!groups.size) {
    box.replaceChildren(el('p', { class: 'empty' }, 'No node has joined.'));
    return;
  }
  const parts = [];
  for (const [group, members] of [...groups].sort((a, b) => String(a[0]).localeCompare(String(b[0])))) {
    const live = members.filter((n) => !n.revoked);
    const connected = live.filter((n) => n.connected).length;
    parts.push(el('h3', {}, `Group ${group}: ${live.length} node${live.length === 1 ? '' : 's'}, ${connected} connected`));
    const head = el('tr', {}, ...['Name', 'Node id', 'Version', 'State', 'Applied revision',
      'Revision lag', 'Last NACK', 'Last seen', 'Certificate expires'].map((h) => el('th', {}, h)));
    const rows = members.map((n) => {
      const expired = new Date(n.cert_expires_at).getTime() < Date.now();
      return el('tr', { 'data-node-id': n.id, class: nodeState(n) },
        cell(n.name), cell(n.id), cell(n.version), cell(nodeState(n)),
        cell(n.applied_revision), cell(n.lag, n.lag > 0 && !n.revoked ? 'lagging' : ''),
        cell(nack(n.last_nack), n.last_nack ? 'nacked' : ''), cell(utc(n.last_seen)),
        cell(`${utc(n.cert_expires_at)} (${relative(n.cert_expires_at)})`, expired ? 'expired' : ''));
    });
    parts.push(el('table', { class: 'nodes', 'data-group': group }, el('thead', {}, head), el('tbody', {}, ...rows)));
  }
  box.replaceChildren(...parts);
}

/// One bar chart per group, drawn as SVG: a bar per bucket, its count above it.
function renderPropagation(p) {
  const box = $('propagation');
  const groups = (p.groups || []).filter((g) => g.count > 0);
  if (!groups.length) {
    box.replaceChildren(el('p', { class: 'empty' }, 'No ACK observed by this replica yet.'));
    return;
  }
  const bounds = p.bounds_seconds || [];
  const labels = bounds.map((b) => `≤${seconds(b)}`);
  labels.push(`>${seconds(bounds[bounds.length - 1] || 0)}`);
  const barW = 52, gap = 6, top = 18, plot = 120, bottom = 34, left = 8;
  const width = left * 2 + labels.length * (barW + gap);
  const figures = groups.map((g) => {
    const max = Math.max(1, ...g.counts);
    const chart = svg('svg', {
      class: 'histogram', viewBox: `0 0 ${width} ${top + plot + bottom}`, width, height: top + plot + bottom,
      role: 'img', 'aria-label': `Commit to ACK times of group ${g.group}`, 'data-group': g.group,
    });
    chart.append(svg('line', { class: 'axis', x1: left, x2: width - left, y1: top + plot, y2: top + plot }));
    g.counts.forEach((count, i) => {
      const h = count ? Math.max(2, Math.round((count / max) * plot)) : 0;
      const x = left + i * (barW + gap);
      const bar = svg('rect', { class: 'bar', x, y: top + plot - h, width: barW, height: h, 'data-count': count });
      bar.append(svg('title', {}, `${labels[i]}: ${count}`));
      chart.append(bar);
      if (count) chart.append(svg('text', { class: 'count', x: x + barW / 2, y: top + plot - h - 4 }, count));
      chart.append(svg('text', { class: 'label', x: x + barW / 2, y: top + plot + 16 }, labels[i]));
    });
    const mean = g.count ? seconds(g.sum_seconds / g.count) : '—';
    return el('figure', { class: 'chart', 'data-group': g.group },
      el('figcaption', {}, `Group ${g.group}: ${g.count} ACKed revision${g.count === 1 ? '' : 's'}, mean ${mean}`),
      chart);
  });
  box.replaceChildren(...figures);
}

function clearData() {
  $('nodes').replaceChildren(el('p', { class: 'empty' }, 'No data.'));
  $('propagation').replaceChildren(el('p', { class: 'empty' }, 'No data.'));
  $('apis').tBodies[0].replaceChildren();
  $('policies').tBodies[0].replaceChildren();
  hideKey();
}

// ---- refresh ----------------------------------------------------------------------------------

async function refresh() {
  clearTimeout(refreshTimer);
  const mine = generation;
  try {
    const [apis, policies, nodes, propagation] = await Promise.all([
      api('GET', '/tyk/apis'), api('GET', '/tyk/policies'),
      api('GET', '/portcullis/nodes'), api('GET', '/portcullis/propagation'),
    ]);
    if (mine !== generation) return;
    renderApis(apis || []);
    renderPolicies(policies || []);
    renderNodes((nodes && nodes.nodes) || []);
    renderPropagation(propagation || {});
    showError('');
    const count = (nodes && nodes.nodes || []).filter((n) => !n.revoked).length;
    $('status').textContent = `Connected: ${apis.length} APIs, ${policies.length} policies, ${count} nodes. ` +
      `Updated ${new Date().toISOString().slice(11, 19)} UTC.`;
    document.body.classList.add('connected');
    refreshTimer = setTimeout(refresh, REFRESH_MS);
  } catch (e) {
    if (mine !== generation) return;
    showError(refused(e));
    if (e.status === 401 || e.status === 403) {
      // A refused secret is forgotten, and nothing fetched with an older one stays on screen.
      disconnect('Not connected: the admin secret was refused.');
    } else {
      refreshTimer = setTimeout(refresh, REFRESH_MS);
    }
  }
}

function connect(value) {
  generation += 1;
  secret = value;
  sessionStorage.setItem(SECRET_KEY, value);
  $('status').textContent = 'Connecting…';
  refresh();
}

function disconnect(status) {
  generation += 1;
  clearTimeout(refreshTimer);
  secret = null;
  sessionStorage.removeItem(SECRET_KEY);
  document.body.classList.remove('connected');
  clearData();
  $('status').textContent = status;
}

// ---- keys -------------------------------------------------------------------------------------

function hideKey() {
  lookedUp = null;
  $('key-result').hidden = true;
  $('key-details').replaceChildren();
}

function keyStatus(text, cls) {
  const s = $('key-status');
  s.textContent = text;
  s.className = cls || '';
}

function describeKey(hash, k) {
  const rights = Object.entries(k.access_rights || {}).map(([id, r]) =>
    `${id}${r && r.api_name ? ` (${r.api_name})` : ''}`).sort();
  const expires = k.expires > 0 ? `${utc(new Date(k.expires * 1000).toISOString())}` : 'never';
  const rows = [
    ['Key hash', hash],
    ['Org', k.org_id || '—'],
    ['Alias', k.alias || '—'],
    ['Access rights', rights.join(', ') || '—'],
    ['Policies', (k.apply_policies || []).join(', ') || (k.apply_policy_id || '—')],
    ['Rate', k.rate ? `${k.rate} / ${k.per} s` : 'unlimited'],
    ['Quota', k.quota_max > 0 ? `${k.quota_remaining} of ${k.quota_max} left` : 'unlimited'],
    ['Expires', expires],
    ['Inactive', k.is_inactive ? 'yes' : 'no'],
    ['Created', k.date_created || '—'],
  ];
  const dl = $('key-details');
  dl.replaceChildren();
  for (const [name, value] of rows) dl.append(el('dt', {}, name), el('dd', {}, value));
}

async function lookUp(raw) {
  hideKey();
  const hash = raw.trim().toLowerCase();
  if (!/^[0-9a-f]{64}$/.test(hash)) {
    keyStatus('A key hash is the 64 hex digits of its sha256 (the key_hash the key was created with).', 'bad');
    return;
  }
  keyStatus('Looking up…');
  try {
    const k = await api('GET', `/tyk/keys/${hash}?hashed=true`);
    describeKey(hash, k);
    lookedUp = hash;
    $('key-result').hidden = false;
    keyStatus('');
  } catch (e) {
    keyStatus(e.status === 404 ? `No key has the hash ${hash}.` : refused(e), 'bad');
  }
}

async function revoke() {
  const hash = lookedUp;
  if (!hash) return;
  if (!window.confirm(`Revoke the key with hash ${hash}? Every edge will refuse it.`)) return;
  try {
    await api('DELETE', `/tyk/keys/${hash}?hashed=true`);
    hideKey();
    keyStatus(`Key ${hash} revoked: every edge refuses it once it applies the change.`, 'good');
  } catch (e) {
    keyStatus(refused(e), 'bad');
  }
}

// ---- wiring -----------------------------------------------------------------------------------

document.addEventListener('DOMContentLoaded', () => {
  $('login').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const input = $('secret');
    const value = input.value;
    input.value = '';
    connect(value);
  });
  $('forget').addEventListener('click', () => disconnect('Not connected: the secret is forgotten.'));
  $('key-lookup').addEventListener('submit', (ev) => {
    ev.preventDefault();
    lookUp($('key-hash').value);
  });
  $('revoke').addEventListener('click', revoke);
  const stored = sessionStorage.getItem(SECRET_KEY);
  if (stored) connect(stored);
});
