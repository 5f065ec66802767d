// envwatch board: the monitoring center's live screen. Plain JavaScript, no build step, no CDN.
// Data: the JSON API (center/API.md) with `Authorization: Bearer`, live updates from
// GET /api/stream (EventSource cannot send headers, so the token goes as ?access_token=).
'use strict';
// Shared with the portal and the desk: common.js (helpers, API, language) and chart.js (the readings chart).

Object.assign(S, { // common.js holds the shared part
  cases: new Map(), alerts: new Map(), warnings: new Map(), fresh: new Set(), es: null, caseId: null, readings: null, summaryTimer: null,
  // Server-side pages of the two lists: the API sorts, searches and counts (X-Total-Count).
  casePage: { offset: 0, limit: 25, sort: '-opened_at' }, alertPage: { offset: 0, limit: 25, sort: '-window_end' },
  caseTotal: 0, alertTotal: 0, listsTimer: null,
});
const PAGE_SIZES = [25, 50, 100];
const DUE_SOON_MS = 2 * 3600e3; // a deadline closer than this is highlighted as due soon

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

function onAlert({ alert, change }) {
  if (matchesAlert(alert)) {
    S.fresh.add(alert.id);
    if (S.alerts.has(alert.id)) { S.alerts.set(alert.id, alert); renderAlerts(); }
    loadListsSoon(); // the page, its order and its total come from the server
  }
  if (change === 'new' && !alert.suppressed_by) { // an alert a filing explains raises no alarm
    alarmFor(alert, alertText(alert), () => { location.hash = alert.case_id ? `#/case/${alert.case_id}` : '#/board'; });
  }
  refreshSummarySoon();
}

function onCase({ case: c }) {
  if (matchesCase(c)) S.fresh.add(c.id);
  if (S.cases.has(c.id) || matchesCase(c)) loadListsSoon();
  if (S.caseId === c.id) loadCase(c.id);
  refreshSummarySoon();
}

function loadListsSoon() {
  clearTimeout(S.listsTimer);
  S.listsTimer = setTimeout(loadLists, 300); // a burst of events costs one request per list
}

function refreshSummarySoon() {
  clearTimeout(S.summaryTimer);
  S.summaryTimer = setTimeout(loadSummary, 300); // a burst of events costs one request
}

// -- counts ----------------------------------------------------------------------------------------

async function loadSummary() {
  const f = filters(); // the counts follow the filters
  S.summary = await api(`/api/summary${query({ kind: f.kind, enterprise: f.enterprise, severity: f.severity })}`);
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
  opts(f.kind, S.kinds.map((k) => [k.kind, label('kind', k.kind)]));
  opts(f.enterprise, [...S.enterprises.values()].map((e) => [e.id, e.name]));
  opts(f.severity, SEVERITIES.map((k) => [k, label('severity', k)]));
  opts(f.state, STATES.map((k) => [k, label('state', k)]), null, [h('option', { value: '_open' }, t('filter.open'))]);
}

function filters() {
  const f = $('#filters');
  return { kind: f.kind.value, enterprise: f.enterprise.value, severity: f.severity.value, state: f.state.value,
    q: f.q.value.trim() };
}

function setFilter(name, value) {
  const f = $('#filters');
  f[name].value = value;
  if (location.hash !== '#/board') location.hash = '#/board';
  filtersChanged();
}

// A new filter or search starts both lists at their first page; the counts follow.
function filtersChanged() {
  S.casePage.offset = 0;
  S.alertPage.offset = 0;
  loadLists();
  loadSummary();
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
  const caseQ = { kind: f.kind, enterprise: f.enterprise, severity: f.severity, q: f.q, ...S.casePage };
  if (f.state === '_open') caseQ.open = 'true'; else caseQ.state = f.state;
  const alertQ = { kind: f.kind, enterprise: f.enterprise, severity: f.severity, q: f.q, ...S.alertPage };
  let cases; let alerts;
  try {
    [cases, alerts] = await Promise.all([api(`/api/cases${query(caseQ)}`, { withTotal: true }), api(`/api/alerts${query(alertQ)}`, { withTotal: true })]);
  } catch (e) {
    failed(e);
    return;
  }
  S.cases = new Map(cases.rows.map((c) => [c.id, c]));
  S.alerts = new Map(alerts.rows.map((a) => [a.id, a]));
  S.caseTotal = cases.total;
  S.alertTotal = alerts.total;
  renderCases();
  renderAlerts();
}

// "value / limit unit"; for an offline alert "离线 60 分钟（允许 15 分钟）", for too few valid minutes
// "有效数据 30 分钟（需 45 分钟）".
function valueText(kind, value, limit, unit) {
  if (value === null || value === undefined) return '';
  if (kind === 'offline' || kind === 'insufficient_valid_data') { // minutes: silent / allowed, valid / needed
    return t(`fmt.${kind}`).replace('{value}', Math.round(value)).replace('{limit}', limit ? Math.round(limit) : '–')
      .replaceAll('{unit}', t(unit === 'h' ? 'unit.h' : 'unit.min')); // daily: valid hours of the day
  }
  return `${fmtNum(value)}${limit ? ` / ${fmtNum(limit)}` : ''} ${unit || ''}`.trim();
}

// The exceedance multiple (超标倍数) = (value − limit) / limit, as HJ and the bureaus state it.
function multipleText(kind, value, limit) {
  if (['offline', 'insufficient_valid_data'].includes(kind) || value === null || value === undefined || !limit
    || value <= limit) return '';
  return t('fmt.multiple').replace('{n}', ((value - limit) / limit).toFixed(2));
}

function outletName(enterpriseId, outletId) {
  const o = (S.enterprises.get(enterpriseId)?.outlets || []).find((x) => x.id === outletId);
  return o?.name || outletId || '';
}

function alertText(a) {
  return [entName(a.enterprise_id), outletName(a.enterprise_id, a.outlet_id), label('kind', a.kind),
    a.kind === 'offline' ? '' : pollutantName(a.pollutant), valueText(a.kind, a.value, a.limit, a.unit),
    multipleText(a.kind, a.value, a.limit)].filter(Boolean).join(' · ');
}

function pager(el, page, total, reload) {
  const from = total ? page.offset + 1 : 0; const to = Math.min(total, page.offset + page.limit);
  const go = (offset) => { page.offset = Math.max(0, offset); reload(); };
  const size = h('select', { 'aria-label': t('page.size'), onchange: (e) => { page.limit = +e.target.value; go(0); } },
    PAGE_SIZES.map((n) => h('option', { value: n }, t('page.per').replace('{n}', n))));
  size.value = String(page.limit);
  el.replaceChildren(
    h('button', { type: 'button', 'data-page': 'prev', disabled: page.offset <= 0, onclick: () => go(page.offset - page.limit) }, '‹'),
    h('span', { class: 'range' }, t('page.range').replace('{from}', from).replace('{to}', to).replace('{total}', total)),
    h('button', { type: 'button', 'data-page': 'next', disabled: to >= total, onclick: () => go(page.offset + page.limit) }, '›'),
    size);
}

async function loadWarnings() {
  const warnings = await api(`/api/warnings${query({ limit: 50 })}`).catch(() => []);
  S.warnings = new Map(warnings.map((w) => [w.id, w]));
  renderWarnings();
}

function renderAlerts() {
  const list = [...S.alerts.values()];
  $('#alert-count').textContent = `(${S.alertTotal})`;
  pager($('#alert-pager'), S.alertPage, S.alertTotal, loadLists);
  $('#alerts').replaceChildren(...(list.length ? list.map((a) => h('li', {
    class: `alert level-${a.severity} ${a.status === 'resolved' ? 'resolved' : ''} ${a.suppressed_by ? 'suppressed' : ''} ${S.fresh.has(a.id) ? 'fresh' : ''}`,
    'data-alert-id': a.id,
    onclick: a.case_id ? () => { location.hash = `#/case/${a.case_id}`; } : null,
  },
  h('span', { class: 'time' }, fmtTime(a.window_end)),
  h('span', { class: `sev sev-${a.severity}` }, label('severity', a.severity)),
  h('b', {}, label('kind', a.kind)),
  h('span', { class: 'who' }, entName(a.enterprise_id), a.outlet_id ? ` · ${outletName(a.enterprise_id, a.outlet_id)}` : ''),
  a.pollutant && a.kind !== 'offline' ? h('span', {}, pollutantName(a.pollutant)) : null,
  a.value !== null && a.value !== undefined ? h('span', { class: 'num' }, valueText(a.kind, a.value, a.limit, a.unit),
    multipleText(a.kind, a.value, a.limit) ? h('b', { class: 'multiple' }, ' ', multipleText(a.kind, a.value, a.limit)) : null) : null,
  a.suppressed_by ? h('a', { class: 'badge suppressed', href: '#/filings', 'data-filing-id': a.suppressed_by,
    title: a.suppressed_by }, t('alert.suppressed')) : null,
  )) : [h('li', { class: 'muted' }, t('alerts.empty'))]));
}

// The deadline the case waits on now: acknowledgement before it is acknowledged, then rectification.
function pendingDue(c) {
  if (['verified', 'dismissed'].includes(c.state)) return null;
  if (['open', 'notified'].includes(c.state) && c.ack_due_at) return { what: 'ack', at: c.ack_due_at };
  return c.deadline_at ? { what: 'rectify', at: c.deadline_at } : null;
}

function duration(ms) {
  const m = Math.round(Math.abs(ms) / 60e3);
  const d = Math.floor(m / 1440); const hh = Math.floor((m % 1440) / 60); const mm = m % 60;
  const parts = d ? [`${d}${t('unit.d')}`, `${hh}${t('unit.h')}`] : hh ? [`${hh}${t('unit.h')}`, `${mm}${t('unit.min')}`] : [`${mm}${t('unit.min')}`];
  return parts.join(S.lang === 'en' ? ' ' : '');
}

function dueCell(c) {
  const due = pendingDue(c);
  if (!due) return h('td', { class: 'due' }, '');
  const left = Date.parse(due.at) - Date.now();
  const state = left < 0 ? 'overdue' : left < DUE_SOON_MS ? 'soon' : 'ok';
  const text = left < 0 ? t('due.overdue').replace('{d}', duration(left)) : t('due.left').replace('{d}', duration(left));
  return h('td', { class: `due due-${state}`, 'data-due': state, title: `${t(`due.${due.what}`)} ${fmtTime(due.at)}` },
    h('span', { class: 'muted' }, t(`due.${due.what}`)), ' ', h('b', {}, text));
}

function findingsCell(c) {
  const fs = c.findings && c.findings.length ? c.findings : [{ pollutant: c.pollutant, kind: c.problem }];
  return h('td', { class: 'findings' }, fs.map((f) => h('div', { class: 'finding', 'data-pollutant': f.pollutant || '' },
    f.kind === 'offline' ? null : h('span', {}, pollutantName(f.pollutant)), ' ',
    h('span', { class: 'num' }, valueText(f.kind, f.value, f.limit, f.unit)),
    multipleText(f.kind, f.value, f.limit) ? h('b', { class: 'multiple' }, ' ', multipleText(f.kind, f.value, f.limit)) : null)));
}

function renderCases() {
  const list = [...S.cases.values()];
  $('#case-count').textContent = `(${S.caseTotal})`;
  pager($('#case-pager'), S.casePage, S.caseTotal, loadLists);
  for (const th of document.querySelectorAll('#case-head-row th[data-sort]')) {
    const key = th.dataset.sort; const cur = S.casePage.sort;
    th.dataset.dir = cur === key ? 'asc' : cur === `-${key}` ? 'desc' : '';
  }
  $('#cases').replaceChildren(...(list.length ? list.map((c) => {
    const due = pendingDue(c); const left = due ? Date.parse(due.at) - Date.now() : null;
    const urgency = left === null ? '' : left < 0 ? 'overdue' : left < DUE_SOON_MS ? 'due-soon' : '';
    return h('tr', {
      class: `${S.fresh.has(c.id) ? 'fresh' : ''} ${urgency}`, 'data-case-id': c.id, 'data-state': c.state,
      onclick: () => { location.hash = `#/case/${c.id}`; },
    },
    h('td', {}, fmtTime(c.opened_at)), h('td', {}, c.enterprise_name || entName(c.enterprise_id)),
    h('td', {}, c.outlet_name || outletName(c.enterprise_id, c.outlet_id)),
    h('td', {}, label('kind', c.problem)), findingsCell(c),
    h('td', {}, h('span', { class: `sev sev-${c.severity}` }, label('severity', c.severity))),
    h('td', {}, h('span', { class: `state state-${c.state}` }, label('state', c.state)), c.emergency ? h('span', { class: 'badge emergency' }, '!') : null),
    dueCell(c), h('td', {}, c.assignee || ''));
  }) : [h('tr', {}, h('td', { colspan: 9, class: 'muted' }, t('cases.empty')))]));
}

// Click a column title to sort by it; again to reverse.
function sortCasesBy(key) {
  S.casePage.sort = S.casePage.sort === key ? `-${key}` : key;
  S.casePage.offset = 0;
  loadLists();
}

// -- case view -------------------------------------------------------------------------------------

async function loadCase(id) {
  let c;
  try {
    [c, S.readings] = await Promise.all([api(`/api/cases/${encodeURIComponent(id)}`),
      api(`/api/cases/${encodeURIComponent(id)}/readings?margin_h=3`)]);
  } catch (e) {
    failed(e);
    return;
  }
  if (S.caseId !== id) return; // the operator moved on meanwhile
  S.case = c;
  renderCase();
}

function renderCase() {
  const c = S.case;
  const ent = S.enterprises.get(c.enterprise_id);
  $('#case-head').replaceChildren(
    h('h2', {}, c.enterprise_name || entName(c.enterprise_id), ' · ', c.outlet_id || '', ' · ', label('kind', c.problem),
      ' ', h('span', { id: 'case-state', class: `state state-${c.state}`, 'data-state': c.state }, label('state', c.state))),
    h('dl', { class: 'facts' },
      fact('col.pollutant', pollutantName(c.pollutant)), fact('col.severity', label('severity', c.severity)),
      fact('case.opened', fmtTime(c.opened_at)), fact('case.ack_due', fmtTime(c.ack_due_at)),
      fact('col.deadline', fmtTime(c.deadline_at)), fact('col.assignee', c.assignee),
      fact('case.emergency', c.emergency ? t('yes') : ''), fact('case.dismiss_reason', c.dismiss_reason),
      fact('col.positive', ent ? (ent.positive_list ? t('yes') : t('no')) : '')),
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
    failed(e);
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
    failed(e);
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
    failed(e);
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
  // Labels are placed after the markers are drawn and the texts measured (maplabels.js): none
  // covers another or a marker, none leaves the map; the enterprises hotspots are attributed to
  // and the hotspots are labelled first and always.
  const attributed = new Set(hots.map((x) => x.enterprise?.id).filter(Boolean));
  const labels = []; // {node, x, y, r, must}
  for (const e of ents) {
    const [x, y] = P(e.lat, e.lon);
    const text = s('text', { class: 'map-label', 'data-label-for': e.id }, e.name);
    g.push(s('g', { class: `ent ${e.positive_list ? 'positive' : ''} ${attributed.has(e.id) ? 'attributed' : ''}`, 'data-enterprise': e.id },
      s('circle', { cx: x, cy: y, r: attributed.has(e.id) ? 5 : 4 }), text, s('title', {}, `${e.name} (${e.id})`)));
    labels.push({ node: text, x, y, r: 5, must: attributed.has(e.id), rank: attributed.has(e.id) ? 0 : 2 });
  }
  for (const x of hots) {
    const p = hotspotPoint(x.alert);
    if (!p) continue;
    const [hx, hy] = P(...p);
    if (x.enterprise && x.enterprise.lat !== null) {
      const [ex, ey] = P(x.enterprise.lat, x.enterprise.lon);
      g.push(s('line', { x1: hx, y1: hy, x2: ex, y2: ey, class: 'attrib' }));
    }
    const text = s('text', { class: 'hotspot-label map-label', 'data-label-for': x.alert.id },
      `${pollutantName(x.alert.pollutant)} ${fmtNum(x.alert.value)}`);
    g.push(s('circle', { cx: hx, cy: hy, r: 9, class: 'hotspot', 'data-alert-id': x.alert.id },
      s('title', {}, `${label('kind', 'hotspot')} ${pollutantName(x.alert.pollutant)} → ${x.enterprise?.name || '?'}`)), text);
    labels.push({ node: text, x: hx, y: hy, r: 9, must: true, rank: 1 });
  }
  const svgEl = s('svg', { viewBox: `0 0 ${W} ${H}`, class: 'map-svg', role: 'img' }, g);
  $('#map').replaceChildren(svgEl);
  placeMapLabels(svgEl, labels, W, H);
  $('#hotspots').replaceChildren(...(hots.length ? hots.map((x) => h('li', {
    onclick: x.alert.case_id ? () => { location.hash = `#/case/${x.alert.case_id}`; } : null, class: 'link',
  }, fmtTime(x.alert.window_end), ' ', h('b', {}, x.alert.pollutant), ' ', fmtNum(x.alert.value), ' ', x.alert.unit || '',
  ' → ', x.enterprise ? x.enterprise.name : '?')) : [h('li', { class: 'muted' }, t('case.none'))]));
}

// Measure each label (getBBox at the origin), place them all (placeLabels), then move each text to
// its box; a label that finds no free place is hidden (its point keeps the tooltip). A label moved
// away from its point gets a thin leader line.
function placeMapLabels(svgEl, labels, W, H) {
  labels.sort((a, b) => a.rank - b.rank);
  const sized = labels.map((l) => {
    l.node.setAttribute('x', 0); l.node.setAttribute('y', 0);
    const b = l.node.getBBox();
    return { ...l, w: b.width, h: b.height, dy: -b.y };
  });
  const obstacles = [...svgEl.querySelectorAll('circle')].map((c) => {
    const r = +c.getAttribute('r'); return { x: +c.getAttribute('cx') - r, y: +c.getAttribute('cy') - r, w: 2 * r, h: 2 * r };
  }).concat([...svgEl.querySelectorAll('text.tick')].map((tx) => { const b = tx.getBBox(); return { x: b.x, y: b.y, w: b.width, h: b.height }; }));
  const boxes = placeLabels(sized, W, H, obstacles);
  sized.forEach((l, i) => {
    const box = boxes[i];
    if (!box) { l.node.remove(); return; }
    l.node.setAttribute('x', box.x.toFixed(1));
    l.node.setAttribute('y', (box.y + l.dy).toFixed(1));
    l.node.dataset.placed = box.leader ? 'leader' : 'near';
    if (box.leader) {
      const cx = Math.min(Math.max(l.x, box.x), box.x + box.w); const cy = Math.min(Math.max(l.y, box.y), box.y + box.h);
      l.node.before(s('line', { x1: l.x, y1: l.y, x2: cx, y2: cy, class: 'leader' }));
    }
  });
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
    failed(e);
  }
}

// -- filings ahead (停产/检修/标定报备) -----------------------------------------------------------------

async function loadFilings() {
  try {
    S.filings = await api('/api/filings');
  } catch (e) {
    failed(e);
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
    ...filingCells(f),
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
    failed(e);
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
  renderAlarmSwitches();
  loadEmergency();
}

async function main() {
  await setLang(localStorage.getItem(LS.lang) || 'zh-CN');
  $('#btn-lang').addEventListener('click', () => switchLang(renderAll));
  $('#btn-logout').addEventListener('click', () => { localStorage.removeItem(LS.token); showLogin(false); });
  $('#btn-emergency').addEventListener('click', declareEmergency);
  $('#filters').addEventListener('change', filtersChanged);
  $('#filters').addEventListener('reset', () => setTimeout(filtersChanged));
  $('#filters').addEventListener('submit', (ev) => { ev.preventDefault(); filtersChanged(); });
  let typing = null;
  $('#filters').q.addEventListener('input', () => { clearTimeout(typing); typing = setTimeout(filtersChanged, 350); });
  for (const th of document.querySelectorAll('#case-head-row th[data-sort]')) th.addEventListener('click', () => sortCasesBy(th.dataset.sort));
  $('#alert-sort').addEventListener('change', (ev) => { S.alertPage.sort = ev.target.value; S.alertPage.offset = 0; loadLists(); });
  // Countdowns move on by themselves (a re-render of the page's rows, no request).
  setInterval(() => { if (S.me && document.body.dataset.view === 'board') renderCases(); }, 30e3);
  initAlarm();
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
