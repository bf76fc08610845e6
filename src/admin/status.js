// ferry's status page: polls status.json once a second and redraws. Everything shown is set as
// text (never parsed as HTML), so route names, paths and errors cannot inject markup.
'use strict';

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null) continue;
    if (k === 'class') e.className = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) {
    if (c === undefined || c === null || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

const SVG = 'http://www.w3.org/2000/svg';

function num(n, digits) {
  if (n === null || n === undefined) return '–';
  return Number(n).toLocaleString('en-US', { maximumFractionDigits: digits === undefined ? 0 : digits });
}

function ms(v) {
  return v === null || v === undefined ? '–' : (v < 10 ? num(v, 2) : num(v, 0)) + ' ms';
}

function ago(s) {
  if (s === null || s === undefined) return 'never';
  if (s < 1) return 'just now';
  if (s < 120) return Math.round(s) + ' s ago';
  return Math.round(s / 60) + ' min ago';
}

function duration(s) {
  if (s < 120) return s + ' s';
  if (s < 7200) return Math.round(s / 60) + ' min';
  if (s < 172800) return Math.round(s / 3600) + ' h';
  return Math.round(s / 86400) + ' d';
}

// A sparkline of requests (and 5xx) per second over the last minute.
function spark(series) {
  const svg = document.createElementNS(SVG, 'svg');
  svg.setAttribute('class', 'spark');
  svg.setAttribute('viewBox', '0 0 120 28');
  svg.setAttribute('preserveAspectRatio', 'none');
  const pts = series || [];
  const max = Math.max(1, ...pts.map((p) => p[0]));
  const line = (i, color) => {
    const pl = document.createElementNS(SVG, 'polyline');
    const step = pts.length > 1 ? 120 / (pts.length - 1) : 0;
    pl.setAttribute('points', pts.map((p, x) => (x * step).toFixed(1) + ',' + (27 - (p[i] / max) * 25).toFixed(1)).join(' '));
    pl.setAttribute('style', 'stroke: var(' + color + ')');
    svg.append(pl);
  };
  if (pts.length > 0) {
    line(0, '--chart');
    if (pts.some((p) => p[1] > 0)) line(1, '--chart-err');
  }
  const title = document.createElementNS(SVG, 'title');
  title.textContent = 'requests per second (red: 5xx), last minute';
  svg.append(title);
  return svg;
}

function matchTags(m) {
  const tags = [];
  if (m.host) tags.push('host ' + m.host);
  if (m.path_exact) tags.push('= ' + m.path_exact);
  if (m.path_prefix) tags.push(m.path_prefix + (m.path_prefix.endsWith('/') ? '' : '…'));
  if (m.path_starts_with) tags.push('^ ' + m.path_starts_with);
  if (m.path_regex) tags.push('~ ' + m.path_regex);
  if (m.methods && m.methods.length) tags.push(m.methods.join(' '));
  for (const [k, v] of Object.entries(m.headers || {})) tags.push(k + ': ' + v);
  if (!tags.length) tags.push('everything');
  return el('td', {}, ...tags.map((t) => el('code', { class: 'tag' }, t)));
}

function actionTags(r) {
  const a = r.actions || {};
  const tags = [];
  if (r.strip_prefix) tags.push('strip prefix');
  if (r.prefix_rewrite) tags.push('prefix → ' + r.prefix_rewrite);
  if (a.access && a.access.length) tags.push('allow/deny');
  if (a.rate_limit) tags.push('rate limit ' + a.rate_limit.rate_per_second + '/s');
  if (a.basic_auth) tags.push('basic auth');
  if (a.redirect) tags.push(a.redirect.status + ' → ' + a.redirect.to);
  if (a.respond) tags.push('respond ' + a.respond.status);
  if (a.rewrite) tags.push('rewrite');
  for (const side of ['request_headers', 'response_headers']) {
    const h = a[side];
    if (h && (Object.keys(h.set).length || Object.keys(h.add).length || h.remove.length)) tags.push(side.replace('_', ' '));
  }
  if (r.compress) tags.push('compress');
  if (r.error_pages && r.error_pages.length) tags.push('error pages');
  return el('td', {}, ...tags.map((t) => el('span', { class: 'tag' }, t)));
}

function target(r) {
  if (r.split) return 'split ' + Object.entries(r.split).map(([b, w]) => b + ' ' + w).join(' / ');
  if (r.backend) return r.backend;
  if (r.static) return 'files ' + r.static;
  const a = r.actions || {};
  if (a.redirect) return 'redirect';
  if (a.respond) return 'answers itself';
  return '–';
}

function renderListeners(s) {
  const out = [];
  for (const l of s.listeners) {
    out.push(el('h3', { 'data-listener': l.name }, l.name, ' ', el('span', { class: 'muted' }, l.protocol + ' on ' + l.bind)));
    if (l.protocol === 'tcp') {
      out.push(el('p', {}, 'Every connection goes to ', el('strong', {}, l.backend || '(by SNI)'), '.'));
      continue;
    }
    const head = el('tr', {}, ...['#', 'route', 'match', 'actions', 'to', 'req/s', '5xx', 'p50', 'p99', 'last minute', 'requests']
      .map((h, i) => el('th', { class: i >= 5 && i !== 9 ? 'num' : null }, h)));
    const rows = l.routes.map((r, i) => {
      const live = r.live || {};
      const err = live.error_rate || 0;
      return el('tr', { 'data-route': l.name + '/' + r.name },
        el('td', { class: 'muted' }, i + 1),
        el('td', {}, el('strong', {}, r.name)),
        matchTags(r.match),
        actionTags(r),
        el('td', {}, target(r)),
        el('td', { class: 'num rps' }, num(live.rps, 2)),
        el('td', { class: 'num errors' }, el('span', { class: err > 0.01 ? 'badge bad' : null }, num(err * 100, 1) + ' %')),
        el('td', { class: 'num p50' }, ms(live.p50_ms)),
        el('td', { class: 'num p99' }, ms(live.p99_ms)),
        el('td', {}, spark(live.series)),
        el('td', { class: 'num total' }, num(live.requests)));
    });
    out.push(el('table', {}, el('thead', {}, head), el('tbody', {}, ...rows)));
  }
  $('listeners').replaceChildren(...out);
}

const CONDITION = { ready: 'ok', serving: 'warn', terminating: 'bad' };

function renderBackends(s) {
  const out = [];
  for (const b of s.backends) {
    const healthy = b.endpoints.filter((e) => e.state === 'healthy').length;
    out.push(el('h3', { 'data-backend': b.name }, b.name, ' ',
      el('span', { class: 'muted' }, (b.service ? 'Service ' + b.service : 'static addresses') + ' · ' + b.balance + ' · '),
      el('span', { class: 'badge ' + (healthy === b.endpoints.length ? 'ok' : healthy > 0 ? 'warn' : 'bad') },
        healthy + ' of ' + b.endpoints.length + ' healthy')));
    if (!b.endpoints.length) {
      out.push(el('p', { class: 'muted' }, 'No endpoints yet.'));
      continue;
    }
    const head = el('tr', {}, ...['address', 'pod', 'condition', 'state', 'in flight', 'requests', 'failures']
      .map((h, i) => el('th', { class: i >= 4 ? 'num' : null }, h)));
    const rows = b.endpoints.map((e) => el('tr', { 'data-endpoint': e.address, 'data-backend': b.name },
      el('td', {}, el('code', {}, e.address), e.backup ? ' (backup)' : '', e.weight !== 1 ? ' ×' + e.weight : ''),
      el('td', {}, e.pod || '–'),
      el('td', {}, el('span', { class: 'badge ' + (CONDITION[e.condition] || 'warn') }, e.condition)),
      el('td', { class: 'state' }, el('span', { class: 'badge ' + (e.state === 'healthy' ? 'ok' : 'bad') }, e.state)),
      el('td', { class: 'num inflight' }, num(e.in_flight)),
      el('td', { class: 'num requests' }, num(e.requests)),
      el('td', { class: 'num failures' }, num(e.failures))));
    out.push(el('table', {}, el('thead', {}, head), el('tbody', {}, ...rows)));
  }
  $('backends').replaceChildren(...out);
}

function renderDiscovery(s) {
  const d = s.discovery;
  const items = d.kubernetes
    ? [['Kubernetes', 'following EndpointSlices'],
      ['last event', ago(d.last_sync_age_s)],
      ['watch restarts', 'endpoints ' + d.watch_restarts.endpoints + ', services ' + d.watch_restarts.services],
      ['API errors', d.errors]]
    : [['Kubernetes', 'not used: every backend has static addresses']];
  $('discovery').replaceChildren(...items.flatMap(([k, v]) => [el('dt', {}, k), el('dd', {}, v)]));
  const body = $('logs').tBodies[0];
  body.replaceChildren(...(s.access_logs.length ? s.access_logs.map((l) => el('tr', { 'data-log': l.log },
    el('td', {}, el('code', {}, l.log)), el('td', { class: 'num' }, num(l.lines)),
    el('td', { class: 'num' }, el('span', { class: l.dropped > 0 ? 'badge warn' : null }, num(l.dropped))),
    el('td', { class: 'num' }, num(l.queued_bytes) + ' B'))) : [el('tr', {}, el('td', { colspan: 4, class: 'muted' }, 'All access logs are off.'))]));
}

let updates = 0;

function render(s) {
  const routes = s.listeners.reduce((n, l) => n + l.routes.length, 0);
  $('summary').textContent = 'v' + s.ferry + ' · table ' + s.version + ' · ' + s.listeners.length + ' listeners, ' + routes +
    ' routes, ' + s.backends.length + ' backends · up ' + duration(s.uptime_s);
  const state = $('state');
  state.textContent = s.draining ? 'draining' : s.ready ? 'ready' : 'not ready';
  state.className = 'badge ' + (s.ready ? 'ok' : s.draining ? 'warn' : 'bad');
  $('config-error').hidden = !s.last_error;
  $('config-error-text').textContent = s.last_error || '';
  renderListeners(s);
  renderBackends(s);
  renderDiscovery(s);
  updates += 1;
  document.body.dataset.updates = String(updates);
  $('updated').textContent = 'updated ' + new Date().toLocaleTimeString();
}

async function poll() {
  try {
    const r = await fetch('status.json', { cache: 'no-store' });
    if (!r.ok) throw new Error('status ' + r.status);
    render(await r.json());
    $('fetch-error').hidden = true;
  } catch (e) {
    $('fetch-error').hidden = false;
  } finally {
    setTimeout(poll, 1000);
  }
}

poll();
