// envwatch enterprise portal: the enterprise's own cases (chart against the limit, notices, a
// deadline countdown, answers with attachments) and its filings ahead (停产/检修/标定报备).
// Only the API an enterprise token allows: /api/cases (its own), /api/cases/{id}/readings,
// POST /api/cases/{id}/answers, /api/enterprises (its own entry), /api/filings.
'use strict';

Object.assign(S, { cases: [], case: null, caseId: null, readings: null, filings: [], outlets: [] });

// -- deadlines -------------------------------------------------------------------------------------

// The deadline that matters now: acknowledgement until the notice is signed for, then rectification.
function dueOf(c) {
  if (['open', 'notified'].includes(c.state) && c.ack_due_at) return { key: 'countdown.ack', at: c.ack_due_at };
  if (ACTIVE.includes(c.state) && c.deadline_at) return { key: 'countdown.rectify', at: c.deadline_at };
  return null;
}

function countdown(c) {
  const due = dueOf(c);
  if (!due) return h('span', { class: 'muted' }, t('countdown.none'));
  return h('span', { class: 'countdown', 'data-due': due.at, 'data-key': due.key }, '');
}

// Refresh every countdown on the page from its data-due (every 30 s, and at once after a render).
function tick() {
  const now = Date.now();
  for (const el of document.querySelectorAll('.countdown[data-due]')) {
    const left = Date.parse(el.dataset.due) - now;
    const when = fmtTime(el.dataset.due);
    if (left <= 0) {
      el.textContent = `${t('countdown.over')} (${when})`;
    } else {
      const mins = Math.floor(left / 60e3);
      el.textContent = `${t(el.dataset.key)} ${Math.floor(mins / 60)}${t('countdown.h')}${mins % 60}${t('countdown.m')} (${when})`;
    }
    el.classList.toggle('over', left <= 0);
    el.classList.toggle('soon', left > 0 && left < 2 * 3600e3);
  }
}

// -- cases -----------------------------------------------------------------------------------------

async function loadCases() {
  S.cases = await api('/api/cases?limit=200');
  renderCases();
}

function renderCases() {
  $('#cases').replaceChildren(...(S.cases.length ? S.cases.map((c) => h('tr', {
    'data-case-id': c.id, 'data-state': c.state, onclick: () => { location.hash = `#/case/${c.id}`; },
  },
  h('td', {}, fmtTime(c.opened_at)), h('td', {}, c.outlet_id), h('td', {}, label('kind', c.problem)),
  h('td', {}, pollutantName(c.pollutant)),
  h('td', {}, h('span', { class: `state state-${c.state}` }, label('state', c.state))),
  h('td', {}, countdown(c)),
  )) : [h('tr', {}, h('td', { colspan: 6, class: 'muted' }, t('portal.cases.empty')))]));
  tick();
}

async function loadCase(id) {
  try {
    const [c, r] = await Promise.all([api(`/api/cases/${encodeURIComponent(id)}`),
      api(`/api/cases/${encodeURIComponent(id)}/readings?margin_h=3`)]);
    if (S.caseId !== id) return;
    S.case = c;
    S.readings = r;
  } catch (e) {
    failed(e);
    return;
  }
  renderCase();
}

function renderCase() {
  const c = S.case;
  const alert = c.alerts[0];
  $('#case-head').replaceChildren(
    h('h2', {}, c.outlet_id || '', ' · ', label('kind', c.problem), ' ',
      h('span', { id: 'case-state', class: `state state-${c.state}`, 'data-state': c.state }, label('state', c.state))),
    h('p', { id: 'case-countdown' }, countdown(c)),
    h('dl', { class: 'facts' },
      fact('col.pollutant', pollutantName(c.pollutant)),
      fact('col.value', alert && alert.value !== null ? `${fmtNum(alert.value)}${alert.limit ? ` / ${fmtNum(alert.limit)}` : ''} ${alert.unit || ''}` : ''),
      fact('case.opened', fmtTime(c.opened_at)), fact('case.ack_due', fmtTime(c.ack_due_at)),
      fact('col.deadline', fmtTime(c.deadline_at))),
    h('p', { class: 'muted' }, 'ID ', c.id),
  );
  readingsChart(S.readings, { sel: $('#chart-pollutant'), target: $('#chart'), key: c.id, pollutant: c.pollutant });
  $('#case-notices').replaceChildren(...noticeItems(c.notices));
  $('#case-answers').replaceChildren(...answerItems(c.answers));
  tick();
}

// An id of 32 hex digits for the answer: a retried submit is then recognised as the same answer.
function newAnswerId() {
  const b = crypto.getRandomValues(new Uint8Array(16)); // works on plain http too (randomUUID does not)
  return [...b].map((x) => x.toString(16).padStart(2, '0')).join('');
}

async function sendAnswer(ev) {
  ev.preventDefault();
  const f = ev.target;
  const body = new FormData();
  body.set('answer_id', newAnswerId());
  body.set('type', f.elements.type.value);
  body.set('text', f.elements.text.value.trim());
  for (const file of f.attachments.files) body.append('attachments', file, file.name);
  try {
    const r = await api(`/api/cases/${encodeURIComponent(S.caseId)}/answers`, { method: 'POST', body });
    toast(r.accepted === false ? `${t('answer.not_accepted')}: ${r.reason || ''}` : t('answer.sent'), r.accepted === false);
    f.reset();
  } catch (e) {
    failed(e);
    return;
  }
  loadCase(S.caseId);
}

// -- filings ---------------------------------------------------------------------------------------

async function loadFilings() {
  S.filings = await api('/api/filings');
  renderFilings();
}

function renderFilings() {
  const sel = $('#filing-form').outlet_id;
  const cur = sel.value;
  sel.replaceChildren(...S.outlets.map((o) => h('option', { value: o.id }, `${o.id} ${o.name}`)));
  if (cur) sel.value = cur;
  $('#filings').replaceChildren(...(S.filings.length ? S.filings.map((f) => h('tr', { 'data-filing-id': f.id, 'data-phase': f.phase },
    h('td', {}, fmtTime(f.filed_at)), h('td', {}, f.outlet_id), ...filingCells(f),
    h('td', {}, f.decision_note || ''),
  )) : [h('tr', {}, h('td', { colspan: 7, class: 'muted' }, t('filings.empty')))]));
}

// datetime-local gives "YYYY-MM-DDTHH:MM" as typed: Beijing time, so the offset goes with it.
const beijing = (v) => `${v}:00+08:00`;

async function sendFiling(ev) {
  ev.preventDefault();
  const f = ev.target;
  const body = new FormData();
  body.set('outlet_id', f.outlet_id.value);
  body.set('kind', f.kind.value);
  body.set('start', beijing(f.start.value));
  body.set('end', beijing(f.end.value));
  body.set('reason', f.reason.value.trim());
  if (f.attachment.files[0]) body.set('attachment', f.attachment.files[0], f.attachment.files[0].name);
  try {
    await api('/api/filings', { method: 'POST', body });
    toast(t('filing.filed'));
    f.reason.value = '';
    f.attachment.value = '';
  } catch (e) {
    failed(e);
    return;
  }
  loadFilings();
}

function defaultPeriod() {
  const f = $('#filing-form');
  const start = new Date(Math.ceil(Date.now() / 3600e3) * 3600e3 + 3600e3);
  if (!f.start.value) f.start.value = chinaLocal(start);
  if (!f.end.value) f.end.value = chinaLocal(new Date(start.getTime() + 4 * 3600e3));
}

// -- views -----------------------------------------------------------------------------------------

function route() {
  const [, view, id] = location.hash.split('/');
  S.caseId = null;
  if (view === 'case' && id) {
    S.caseId = decodeURIComponent(id);
    showView('case', 'cases');
    loadCase(S.caseId);
  } else if (view === 'filings') {
    showView('filings');
    defaultPeriod();
    loadFilings();
  } else {
    showView('cases');
    loadCases();
  }
}

function renderAll() {
  renderCases();
  if (S.caseId && S.case) renderCase();
  renderFilings();
}

async function main() {
  if (!(await signedInAs('enterprise'))) return;
  const [ent] = await api('/api/enterprises');
  S.outlets = ent ? ent.outlets : [];
  $('#me').textContent = ent ? ent.name : S.me.name;
  document.body.dataset.signedIn = 'yes';
  $('#btn-lang').addEventListener('click', () => switchLang(renderAll));
  $('#chart-pollutant').addEventListener('change', renderCase);
  $('#answer-form').addEventListener('submit', sendAnswer);
  $('#filing-form').addEventListener('submit', sendFiling);
  window.addEventListener('hashchange', route);
  setInterval(tick, 30e3);
  route();
}

main();
