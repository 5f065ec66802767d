// envwatch board: the monitoring center's live screen. Plain JavaScript, no build step, no CDN.
// Data: the JSON API (center/API.md) with `Authorization: Bearer`, live updates from
// GET /api/stream (EventSource cannot send headers, so the token goes as ?access_token=).
'use strict';
// Shared with the portal and the desk: common.js (helpers, API, language) and chart.js (the readings chart).

Object.assign(S, { // common.js holds the shared part
  cases: new Map(), alerts: new Map(), warnings: new Map(), fresh: new Set(), es: null, caseId: null, readings: null, summaryTimer: null,
});

// -- sign-in ---------------------------------------------------------------------------------------

function showLogin(bad) {
  S.me = null;
  if (S.es) S.es.close();
  document.body.dataset.signedIn = 'no';
  showView('login');
  $('#login-error').hidden = !bad;
}

async function signIn(token) {
  S.token = token;
  try {
    const me = await api('/api/me');
    if (me.role !== 'operator') { // one sign-in for everyone: enterprises and officers have their own screens
      localStorage.setItem(LS.token, token);
      location.assign(HOME[me.role]);
      return;
    }
    S.me = me;
  } catch (e) {
    localStorage.removeItem(LS.token);
    showLogin(true);
    return;
  }
  localStorage.setItem(LS.token, token);
  // The service's configured language applies until the operator picks one on this browser.
  if (!localStorage.getItem(LS.lang) && S.me.language && S.me.language !== S.lang) await setLang(S.me.language);
  document.body.dataset.signedIn = 'yes';
  $('#me').textContent = S.me.name;
  const [ents, pols] = await Promise.all([api('/api/enterprises'), fetch('/board/pollutants').then((r) => r.json())]);
  S.enterprises = new Map(ents.map((e) => [e.id, e]));
  S.pollutants = pols;
  fillFilters();
  connectStream();
  await Promise.all([loadSummary(), loadLists(), loadWarnings(), loadEmergency()]);
  route();
  document.body.dataset.ready = 'yes'; // signed in, lists loaded, the route shown
}

// -- the live stream -------------------------------------------------------------------------------

function setLive(state) {
  const el = $('#live');
  el.dataset.state = state;
  el.textContent = t(`live.${state}`);
}

function connectStream() {
  if (S.es) S.es.close();
  setLive('connecting');
  const es = new EventSource(`/api/stream?access_token=${encodeURIComponent(S.token)}`);
  S.es = es;
  es.onopen = () => setLive('on');
  es.onerror = () => {
    setLive('off');
    // The browser retries by itself (sending Last-Event-ID) unless the server refused outright.
    if (es.readyState === EventSource.CLOSED && S.es === es) setTimeout(() => S.me && connectStream(), 3000);
  };
  es.addEventListener('alert', (m) => onAlert(JSON.parse(m.data)));
  es.addEventListener('case', (m) => onCase(JSON.parse(m.data)));
  es.addEventListener('warning', (m) => onWarning(JSON.parse(m.data)));
}

// Early warnings (detect/warning.py): not violations, shown apart from alerts and cases.
function onWarning({ warning: w }) {
  S.warnings.set(w.id, w);
  S.fresh.add(w.id);
  renderWarnings();
}

function renderWarnings() {
  const list = [...S.warnings.values()].sort(byNewest('updated_at')).slice(0, 50);
  $('#warning-count').textContent = `(${list.filter((w) => w.status === 'active').length})`;
  $('#warnings').replaceChildren(...(list.length ? list.map((w) => h('li', {
    class: `alert warning warning-${w.level} ${w.status === 'active' ? '' : 'resolved'} ${S.fresh.has(w.id) ? 'fresh' : ''}`,
    'data-warning-id': w.id,
  },
  h('span', { class: 'time' }, fmtTime(w.window_start)),
  h('span', { class: `sev warning-badge warning-${w.level}` }, t(`warning.${w.level}`)),
  h('b', {}, t(`warning.${w.kind}`)),
  h('span', { class: 'who' }, entName(w.enterprise_id), ` · ${w.outlet_id}`),
  h('span', {}, pollutantName(w.pollutant)),
  h('span', { class: 'num' }, `${fmtNum(w.value)} / ${fmtNum(w.limit)} ${w.unit || ''}`),
  h('span', { class: 'muted' }, t(`warning.${w.status}`)),
  )) : [h('li', { class: 'muted' }, t('warnings.empty'))]));
}

function onAlert({ alert }) {
  if (matchesAlert(alert)) {
    S.alerts.set(alert.id, alert);
    S.fresh.add(alert.id);
    renderAlerts();
  }
  refreshSummarySoon();
}

function onCase({ case: c }) {
  if (matchesCase(c)) {
    S.cases.set(c.id, c);
    S.fresh.add(c.id);
  } else {
    S.cases.delete(c.id);
  }
  renderCases();
  if (S.caseId === c.id) loadCase(c.id);
  refreshSummarySoon();
}

function refreshSummarySoon() {
  clearTimeout(S.summaryTimer);
  S.summaryTimer = setTimeout(loadSummary, 300); // a burst of events costs one request
}

// -- counts ----------------------------------------------------------------------------------------

async function loadSummary() {
  S.summary = await api('/api/summary');
  renderCounts();
}

function renderCounts() {
  const s = S.summary;
  if (!s) return;
  const group = (title, prefix, counts, order, filter) => {
    // Fixed keys (the states) always show, zeros included; other groups show what is there.
    const keys = [...new Set([...order, ...Object.keys(counts).filter((k) => counts[k]).sort()])];
    const chips = keys.map((k) => h('button', {
      class: `chip ${prefix}-${k}`, 'data-count': `${prefix}:${k}`, type: 'button',
      onclick: filter ? () => setFilter(filter, k) : null,
    }, h('b', {}, counts[k] || 0), ' ', label(prefix, k)));
    return h('div', { class: 'group card' }, h('h4', {}, t(title)), chips.length ? chips : h('span', { class: 'muted' }, t('counts.none')));
  };
  $('#counts').replaceChildren(
    group('counts.cases', 'state', s.cases_by_state, STATES, 'state'),
    group('counts.kinds', 'kind', s.open_cases_by_kind, [], 'kind'),
    group('counts.alerts', 'kind', s.open_alerts_by_kind, [], 'kind'),
    group('counts.tickets', 'ticket', s.tickets_by_status, [], null),
  );
}

// -- filters and lists -----------------------------------------------------------------------------

function fillFilters() {
  const f = $('#filters');
  const opts = (sel, values, lab, extra = []) => {
    const cur = sel.value;
    sel.replaceChildren(h('option', { value: '' }, t('filter.all')), ...extra,
      ...values.map(([v, text]) => h('option', { value: v }, text)));
    sel.value = cur;
  };
  opts(f.kind, KINDS.map((k) => [k, label('kind', k)]));
  opts(f.enterprise, [...S.enterprises.values()].map((e) => [e.id, e.name]));
  opts(f.severity, SEVERITIES.map((k) => [k, label('severity', k)]));
  opts(f.state, STATES.map((k) => [k, label('state', k)]), null, [h('option', { value: '_open' }, t('filter.open'))]);
}

function filters() {
  const f = $('#filters');
  return { kind: f.kind.value, enterprise: f.enterprise.value, severity: f.severity.value, state: f.state.value };
}

function setFilter(name, value) {
  const f = $('#filters');
  f[name].value = value;
  if (location.hash !== '#/board') location.hash = '#/board';
  loadLists();
}

function matchesAlert(a) {
  const f = filters();
  return (!f.kind || a.kind === f.kind) && (!f.enterprise || a.enterprise_id === f.enterprise)
    && (!f.severity || a.severity === f.severity);
}

function matchesCase(c) {
  const f = filters();
  const state = f.state === '_open' ? ACTIVE.concat('escalated').includes(c.state) : (!f.state || c.state === f.state);
  return state && (!f.kind || c.problem === f.kind) && (!f.enterprise || c.enterprise_id === f.enterprise)
    && (!f.severity || c.severity === f.severity);
}

async function loadLists() {
  const f = filters();
  const caseQ = { kind: f.kind, enterprise: f.enterprise, severity: f.severity, limit: 200 };
  if (f.state === '_open') caseQ.open = 'true'; else caseQ.state = f.state;
  const [cases, alerts] = await Promise.all([
    api(`/api/cases${query(caseQ)}`),
    api(`/api/alerts${query({ kind: f.kind, enterprise: f.enterprise, severity: f.severity, limit: 100 })}`),
  ]);
  S.cases = new Map(cases.map((c) => [c.id, c]));
  S.alerts = new Map(alerts.map((a) => [a.id, a]));
  renderCases();
  renderAlerts();
}

async function loadWarnings() {
  const warnings = await api(`/api/warnings${query({ limit: 50 })}`).catch(() => []);
  S.warnings = new Map(warnings.map((w) => [w.id, w]));
  renderWarnings();
}

function renderAlerts() {
  const list = [...S.alerts.values()].sort(byNewest('window_end')).slice(0, 100);
  $('#alert-count').textContent = `(${list.length})`;
  $('#alerts').replaceChildren(...(list.length ? list.map((a) => h('li', {
    class: `alert level-${a.severity} ${a.status === 'resolved' ? 'resolved' : ''} ${a.suppressed_by ? 'suppressed' : ''} ${S.fresh.has(a.id) ? 'fresh' : ''}`,
    'data-alert-id': a.id,
    onclick: a.case_id ? () => { location.hash = `#/case/${a.case_id}`; } : null,
  },
  h('span', { class: 'time' }, fmtTime(a.window_end)),
  h('span', { class: `sev sev-${a.severity}` }, label('severity', a.severity)),
  h('b', {}, label('kind', a.kind)),
  h('span', { class: 'who' }, entName(a.enterprise_id), a.outlet_id ? ` · ${a.outlet_id}` : ''),
  a.pollutant ? h('span', {}, pollutantName(a.pollutant)) : null,
  a.value !== null && a.value !== undefined ? h('span', { class: 'num' }, `${fmtNum(a.value)}${a.limit ? ` / ${fmtNum(a.limit)}` : ''} ${a.unit || ''}`) : null,
  a.suppressed_by ? h('a', { class: 'badge suppressed', href: '#/filings', 'data-filing-id': a.suppressed_by,
    title: a.suppressed_by }, t('alert.suppressed')) : null,
  )) : [h('li', { class: 'muted' }, t('alerts.empty'))]));
}

function renderCases() {
  const list = [...S.cases.values()].sort(byNewest('updated_at'));
  $('#case-count').textContent = `(${list.length})`;
  $('#cases').replaceChildren(...(list.length ? list.map((c) => h('tr', {
    class: S.fresh.has(c.id) ? 'fresh' : '', 'data-case-id': c.id, 'data-state': c.state,
    onclick: () => { location.hash = `#/case/${c.id}`; },
  },
  h('td', {}, fmtTime(c.opened_at)), h('td', {}, c.enterprise_name || entName(c.enterprise_id)), h('td', {}, c.outlet_id),
  h('td', {}, label('kind', c.problem)), h('td', {}, pollutantName(c.pollutant)),
  h('td', {}, h('span', { class: `sev sev-${c.severity}` }, label('severity', c.severity))),
  h('td', {}, h('span', { class: `state state-${c.state}` }, label('state', c.state)), c.emergency ? h('span', { class: 'badge emergency' }, '!') : null),
  h('td', {}, fmtTime(c.deadline_at)), h('td', {}, c.assignee || ''),
  )) : [h('tr', {}, h('td', { colspan: 9, class: 'muted' }, t('cases.empty')))]));
}

// -- case view -------------------------------------------------------------------------------------

async function loadCase(id) {
  let c;
  try {
    [c, S.readings] = await Promise.all([api(`/api/cases/${encodeURIComponent(id)}`),
      api(`/api/cases/${encodeURIComponent(id)}/readings?margin_h=3`)]);
  } catch (e) {
    toast(`${t('act.failed')}: ${e.message}`, true);
    return;
  }
  if (S.caseId !== id) return; // the operator moved on meanwhile
  S.case = c;
  renderCase();
}

function renderCase() {
  const c = S.case;
  const ent = S.enterprises.get(c.enterprise_id);
  const field = (k, v) => (v ? [h('dt', {}, t(k)), h('dd', {}, v)] : []);
  $('#case-head').replaceChildren(
    h('h2', {}, c.enterprise_name || entName(c.enterprise_id), ' · ', c.outlet_id || '', ' · ', label('kind', c.problem),
      ' ', h('span', { id: 'case-state', class: `state state-${c.state}`, 'data-state': c.state }, label('state', c.state))),
    h('dl', { class: 'facts' },
      field('col.pollutant', pollutantName(c.pollutant)), field('col.severity', label('severity', c.severity)),
      field('case.opened', fmtTime(c.opened_at)), field('case.ack_due', fmtTime(c.ack_due_at)),
      field('col.deadline', fmtTime(c.deadline_at)), field('col.assignee', c.assignee),
      field('case.emergency', c.emergency ? t('yes') : ''), field('case.dismiss_reason', c.dismiss_reason),
      field('col.positive', ent ? (ent.positive_list ? t('yes') : t('no')) : '')),
    h('p', { class: 'muted' }, 'ID ', c.id),
  );
  renderActions(c, ent);
  renderChart();
  $('#case-history').replaceChildren(...historyItems(c.events));
  $('#case-notices').replaceChildren(...noticeItems(c.notices));
  $('#case-answers').replaceChildren(...answerItems(c.answers));
  const tk = c.ticket;
  $('#case-ticket').replaceChildren(tk ? h('p', {}, `${tk.priority} · ${label('ticket', tk.status)} · ${label('reason', tk.reason)}`,
    tk.officer ? ` · ${tk.officer}` : '', tk.findings ? h('br') : null, tk.findings || '', tk.outcome ? ` → ${tk.outcome}` : '')
    : h('p', { class: 'muted' }, t('case.none')));
}

function renderActions(c, ent) {
  const active = ACTIVE.includes(c.state);
  const open = active || c.state === 'escalated';
  const btn = (key, show, fn) => (show ? h('button', { 'data-action': key, onclick: fn }, t(`act.${key}`)) : null);
  const act = (action, body = {}) => caseAction(c.id, { action, ...body });
  $('#case-actions').replaceChildren(...[
    btn('acknowledge', open, () => act('acknowledge')),
    btn('assign', open, async () => {
      const v = await ask(t('act.assign'), [{ name: 'assignee', label: 'form.assignee', required: true, value: c.assignee || '' }]);
      if (v) act('assign', v);
    }),
    btn('escalate', active, async () => {
      const v = await ask(t('act.escalate'), [{ name: 'priority', label: 'form.priority', options: [['P1', 'P1'], ['P2', 'P2'], ['P3', 'P3']], value: 'P2' }]);
      if (v) act('escalate', v);
    }),
    btn('dismiss', active, async () => {
      const v = await ask(t('act.dismiss'), [{ name: 'reason', label: 'form.reason', required: true, textarea: true }]);
      if (v) act('dismiss', v);
    }),
    btn('note', true, async () => {
      const v = await ask(t('act.note'), [{ name: 'text', label: 'form.text', required: true, textarea: true }]);
      if (v) act('note', v);
    }),
    ent ? positiveButton(ent) : null,
  ].filter(Boolean));
}

async function caseAction(id, body) {
  try {
    S.case = { ...S.case, ...(await api(`/api/cases/${encodeURIComponent(id)}/actions`, { method: 'POST', body })) };
    toast(t('act.done'));
    if (S.caseId === id) renderCase();
  } catch (e) {
    toast(`${t('act.failed')}: ${e.message}`, true);
  }
}

function positiveButton(ent) {
  const key = ent.positive_list ? 'pl_remove' : 'pl_add';
  return h('button', { 'data-action': key, 'data-enterprise': ent.id, onclick: () => togglePositive(ent) }, t(`act.${key}`));
}

async function togglePositive(ent) {
  const v = await ask(t(ent.positive_list ? 'act.pl_remove' : 'act.pl_add'), [{ name: 'note', label: 'form.note', value: '' }]);
  if (!v) return;
  const path = `/api/enterprises/${encodeURIComponent(ent.id)}/positive-list`;
  try {
    const r = ent.positive_list ? await api(`${path}${query({ note: v.note })}`, { method: 'DELETE' })
      : await api(path, { method: 'POST', body: { note: v.note } });
    ent.positive_list = r.positive_list;
    toast(t('act.done'));
    renderAll();
  } catch (e) {
    toast(`${t('act.failed')}: ${e.message}`, true);
  }
}

function renderChart() {
  readingsChart(S.readings, { sel: $('#chart-pollutant'), target: $('#chart'), key: S.case.id, pollutant: S.case.pollutant });
}

// -- map view (SVG, no tiles) ----------------------------------------------------------------------

async function loadMap() {
  const hours = +$('#map-range').value;
  const to = new Date(); const from = new Date(to.getTime() - hours * 3600e3);
  const range = query({ from: from.toISOString(), to: to.toISOString() });
  try {
    [S.tracks, S.hotspots] = await Promise.all([api(`/api/mobile${range}`), api(`/api/hotspots${range}`)]);
  } catch (e) {
    toast(`${t('act.failed')}: ${e.message}`, true);
    return;
  }
  renderMap();
}

// Where a hotspot is: the centroid of its hot points (detect/hotspot.py's evidence).
function hotspotPoint(a) {
  const p = (a.evidence || {}).centroid || (a.evidence || {}).peak_position;
  return p && p.lat !== undefined && p.lon !== undefined ? [p.lat, p.lon] : null;
}

function renderMap() {
  const ents = [...S.enterprises.values()].filter((e) => e.lat !== null && e.lon !== null);
  const tracks = S.tracks || []; const hots = S.hotspots || [];
  const pts = ents.map((e) => [e.lat, e.lon])
    .concat(tracks.flatMap((tr) => tr.points.filter((p) => p.lat !== null).map((p) => [p.lat, p.lon])))
    .concat(hots.map((x) => hotspotPoint(x.alert)).filter(Boolean));
  if (!pts.length) { $('#map').replaceChildren(h('p', { class: 'muted' }, t('map.empty'))); return; }
  // Equirectangular projection around the city's centre: east-west degrees shrink by cos(lat),
  // which is exact enough over a city (~50 km) and keeps the code to a few lines.
  let [la0, la1, lo0, lo1] = [Infinity, -Infinity, Infinity, -Infinity];
  for (const [la, lo] of pts) { la0 = Math.min(la0, la); la1 = Math.max(la1, la); lo0 = Math.min(lo0, lo); lo1 = Math.max(lo1, lo); }
  const k = Math.cos(((la0 + la1) / 2) * Math.PI / 180);
  const W = 1000; const H = 680; const M = 40;
  const spanX = Math.max((lo1 - lo0) * k, 0.01); const spanY = Math.max(la1 - la0, 0.01);
  const scale = Math.min((W - 2 * M) / spanX, (H - 2 * M) / spanY);
  const cx = (lo0 + lo1) / 2; const cy = (la0 + la1) / 2;
  const P = (la, lo) => [W / 2 + (lo - cx) * k * scale, H / 2 - (la - cy) * scale];
  const g = [s('rect', { x: 0, y: 0, width: W, height: H, class: 'map-bg' })];
  const lat0 = cy - H / 2 / scale; const lat1 = cy + H / 2 / scale;
  const lon0 = cx - W / 2 / (k * scale); const lon1 = cx + W / 2 / (k * scale);
  for (const la of niceTicks(lat0, lat1, 6)) {
    const [, y] = P(la, cx);
    g.push(s('line', { x1: 0, x2: W, y1: y, y2: y, class: 'grid' }), s('text', { x: 4, y: y - 3, class: 'tick' }, `${la.toFixed(2)}°N`));
  }
  for (const lo of niceTicks(lon0, lon1, 8)) {
    const [x] = P(cy, lo);
    g.push(s('line', { x1: x, x2: x, y1: 0, y2: H, class: 'grid' }), s('text', { x: x + 3, y: H - 4, class: 'tick' }, `${lo.toFixed(2)}°E`));
  }
  // Scale bar: 5 km (1° latitude = 111.32 km).
  const km5 = (5 / 111.32) * scale;
  g.push(s('path', { d: `M${W - M - km5},${H - 24}h${km5}`, class: 'scalebar' }), s('text', { x: W - M - km5 / 2, y: H - 30, class: 'tick', 'text-anchor': 'middle' }, '5 km'));
  for (const tr of tracks) {
    const d = tr.points.filter((p) => p.lat !== null).map((p, i) => `${i ? 'L' : 'M'}${P(p.lat, p.lon).map((v) => v.toFixed(1)).join(',')}`).join('');
    if (d) g.push(s('path', { d, class: `track ${tr.kind}`, 'data-device': tr.device }, s('title', {}, `${tr.device} (${tr.kind})`)));
  }
  for (const e of ents) {
    const [x, y] = P(e.lat, e.lon);
    g.push(s('g', { class: `ent ${e.positive_list ? 'positive' : ''}`, 'data-enterprise': e.id },
      s('circle', { cx: x, cy: y, r: 4 }), s('text', { x: x + 6, y: y + 4 }, e.name), s('title', {}, `${e.name} (${e.id})`)));
  }
  for (const x of hots) {
    const p = hotspotPoint(x.alert);
    if (!p) continue;
    const [hx, hy] = P(...p);
    if (x.enterprise && x.enterprise.lat !== null) {
      const [ex, ey] = P(x.enterprise.lat, x.enterprise.lon);
      g.push(s('line', { x1: hx, y1: hy, x2: ex, y2: ey, class: 'attrib' }));
    }
    g.push(s('circle', { cx: hx, cy: hy, r: 9, class: 'hotspot', 'data-alert-id': x.alert.id },
      s('title', {}, `${label('kind', 'hotspot')} ${x.alert.pollutant} → ${x.enterprise?.name || '?'}`)),
    s('text', { x: hx + 12, y: hy - 8, class: 'hotspot-label' }, `${x.alert.pollutant} ${fmtNum(x.alert.value)}`));
  }
  $('#map').replaceChildren(s('svg', { viewBox: `0 0 ${W} ${H}`, class: 'map-svg', role: 'img' }, g));
  $('#hotspots').replaceChildren(...(hots.length ? hots.map((x) => h('li', {
    onclick: x.alert.case_id ? () => { location.hash = `#/case/${x.alert.case_id}`; } : null, class: 'link',
  }, fmtTime(x.alert.window_end), ' ', h('b', {}, x.alert.pollutant), ' ', fmtNum(x.alert.value), ' ', x.alert.unit || '',
  ' → ', x.enterprise ? x.enterprise.name : '?')) : [h('li', { class: 'muted' }, t('case.none'))]));
}

// -- enterprises and emergencies -------------------------------------------------------------------

function renderEnterprises() {
  $('#enterprises').replaceChildren(...[...S.enterprises.values()].map((e) => h('tr', { 'data-enterprise': e.id },
    h('td', {}, e.id), h('td', {}, e.name), h('td', {}, e.industry), h('td', {}, e.emergency_grade),
    h('td', {}, e.positive_list ? t('yes') : t('no')), h('td', {}, positiveButton(e)))));
}

async function loadEmergency() {
  const list = await api('/api/emergencies');
  const now = Date.now();
  const inForce = list.filter((e) => Date.parse(e.start) <= now && now < Date.parse(e.end));
  const worst = inForce.sort((a, b) => ['yellow', 'orange', 'red'].indexOf(b.level) - ['yellow', 'orange', 'red'].indexOf(a.level))[0];
  const el = $('#emergency-badge');
  el.hidden = !worst;
  if (worst) {
    el.textContent = `${t('case.emergency')}: ${label('level', worst.level)} → ${fmtTime(worst.end)}`;
    el.dataset.level = worst.level;
  }
}

async function declareEmergency() {
  const now = new Date();
  const v = await ask(t('act.emergency'), [
    { name: 'level', label: 'form.level', options: ['yellow', 'orange', 'red'].map((l) => [l, label('level', l)]), value: 'orange' },
    { name: 'start', label: 'form.start', type: 'datetime-local', value: chinaLocal(now), required: true },
    { name: 'end', label: 'form.end', type: 'datetime-local', value: chinaLocal(new Date(now.getTime() + 72 * 3600e3)), required: true },
    { name: 'note', label: 'form.note', value: '' },
  ]);
  if (!v) return;
  try {
    await api('/api/emergencies', { method: 'POST', body: v });
    toast(t('act.done'));
    loadEmergency();
  } catch (e) {
    toast(`${t('act.failed')}: ${e.message}`, true);
  }
}

// -- filings ahead (停产/检修/标定报备) -----------------------------------------------------------------

async function loadFilings() {
  try {
    S.filings = await api('/api/filings');
  } catch (e) {
    toast(`${t('act.failed')}: ${e.message}`, true);
    return;
  }
  renderFilings();
}

// Like a silence in Alertmanager: who filed it and when, the period, why, who decided, what it suppressed.
function renderFilings() {
  const list = S.filings || [];
  $('#filings').replaceChildren(...(list.length ? list.map((f) => h('tr', { 'data-filing-id': f.id, 'data-phase': f.phase },
    h('td', {}, fmtTime(f.filed_at), h('br'), h('span', { class: 'muted' }, f.filed_by)),
    h('td', {}, f.enterprise_name || entName(f.enterprise_id)), h('td', {}, f.outlet_id),
    h('td', {}, label('filing.kind', f.kind)),
    h('td', {}, `${fmtTime(f.start)} – ${fmtTime(f.end)}`,
      f.after_the_fact ? h('span', { class: 'badge late', 'data-after-the-fact': '' }, t('filing.after')) : null),
    h('td', {}, f.reason, f.attachment ? h('span', { class: 'muted' }, ` (${t('filing.attachment')}: ${f.attachment.name})`) : null),
    h('td', {}, h('span', { class: `phase phase-${f.phase}` }, label('filing.phase', f.phase))),
    h('td', { class: 'num' }, f.suppressed_alerts),
    h('td', {}, f.decided_by ? `${f.decided_by} ${fmtTime(f.decided_at)}` : '', f.decision_note ? h('br') : null, f.decision_note || ''),
    h('td', {}, f.status === 'pending' ? [
      h('button', { 'data-action': 'approve', onclick: () => decideFiling(f, 'approve') }, t('act.approve')),
      h('button', { 'data-action': 'reject', onclick: () => decideFiling(f, 'reject') }, t('act.reject'))] : null),
  )) : [h('tr', {}, h('td', { colspan: 10, class: 'muted' }, t('filings.empty')))]));
}

async function decideFiling(f, decision) {
  const v = await ask(t(`act.${decision}`), [{ name: 'note', label: 'form.decision_note', textarea: true, required: decision === 'reject' }]);
  if (!v) return;
  try {
    await api(`/api/filings/${encodeURIComponent(f.id)}/decision`, { method: 'POST', body: { decision, note: v.note } });
    toast(t('act.done'));
    loadFilings();
  } catch (e) {
    toast(`${t('act.failed')}: ${e.message}`, true);
  }
}

// -- views and routing -----------------------------------------------------------------------------

function route() {
  if (!S.me) return;
  const [, view, id] = location.hash.split('/');
  S.caseId = null;
  if (view === 'case' && id) {
    S.caseId = decodeURIComponent(id);
    showView('case', 'board');
    loadCase(S.caseId);
  } else if (view === 'map') {
    showView('map');
    loadMap();
  } else if (view === 'filings') {
    showView('filings');
    loadFilings();
  } else if (view === 'enterprises') {
    showView('enterprises');
    renderEnterprises();
  } else {
    showView('board');
  }
}

function renderAll() {
  setLive($('#live').dataset.state);
  fillFilters();
  renderCounts();
  renderAlerts();
  renderCases();
  if (S.caseId && S.case) renderCase();
  if (document.body.dataset.view === 'map') renderMap();
  if (document.body.dataset.view === 'enterprises') renderEnterprises();
  if (document.body.dataset.view === 'filings') renderFilings();
  loadEmergency();
}

async function main() {
  await setLang(localStorage.getItem(LS.lang) || 'zh-CN');
  $('#btn-lang').addEventListener('click', () => switchLang(renderAll));
  $('#btn-logout').addEventListener('click', () => { localStorage.removeItem(LS.token); showLogin(false); });
  $('#btn-emergency').addEventListener('click', declareEmergency);
  $('#filters').addEventListener('change', loadLists);
  $('#filters').addEventListener('reset', () => setTimeout(loadLists));
  $('#map-range').addEventListener('change', loadMap);
  $('#chart-pollutant').addEventListener('change', renderChart);
  $('#login-form').addEventListener('submit', (ev) => { ev.preventDefault(); signIn(ev.target.token.value.trim()); });
  window.addEventListener('hashchange', route);
  // A link may carry ?token=... (e.g. from `envwatch run`'s start-up message); keep it out of the
  // address bar and history once read.
  const url = new URL(location.href);
  const fromUrl = url.searchParams.get('token');
  if (fromUrl) {
    url.searchParams.delete('token');
    history.replaceState(null, '', url.pathname + url.search + url.hash);
  }
  const token = fromUrl || localStorage.getItem(LS.token);
  if (token) await signIn(token); else showLogin(false);
}

main();
