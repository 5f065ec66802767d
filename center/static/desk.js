// envwatch officer desk: the officer's tickets (unaccepted ones and its own), accept, record
// findings, close with an outcome, the case chart, and the evidence package with its digest.
// Only the API an officer token allows: /api/tickets, /api/tickets/{id}, .../actions,
// .../readings and .../evidence.
'use strict';

Object.assign(S, { tickets: [], ticket: null, ticketId: null, readings: null });
const OUTCOMES = ['rectified', 'penalized', 'no_violation', 'referred'];

async function loadTickets() {
  S.tickets = await api('/api/tickets');
  renderTickets();
}

function renderTickets() {
  $('#tickets').replaceChildren(...(S.tickets.length ? S.tickets.map((tk) => h('tr', {
    'data-ticket-id': tk.id, 'data-status': tk.status, onclick: () => { location.hash = `#/ticket/${tk.id}`; },
  },
  h('td', {}, h('b', {}, tk.priority)), h('td', {}, label('reason', tk.reason)),
  h('td', {}, label('ticket', tk.status), tk.officer ? h('span', { class: 'muted' }, ` · ${tk.officer}`) : null),
  h('td', {}, tk.enterprise_id), h('td', {}, tk.outlet_id), h('td', {}, label('kind', tk.problem)),
  h('td', {}, fmtTime(tk.opened_at)),
  )) : [h('tr', {}, h('td', { colspan: 7, class: 'muted' }, t('desk.empty')))]));
}

async function loadTicket(id) {
  const path = `/api/tickets/${encodeURIComponent(id)}`;
  try {
    const [tk, r] = await Promise.all([api(path), api(`${path}/readings?margin_h=3`)]);
    if (S.ticketId !== id) return;
    S.ticket = tk;
    S.readings = r;
  } catch (e) {
    failed(e);
    return;
  }
  renderTicket();
}

function renderTicket() {
  const tk = S.ticket;
  const c = tk.case || {};
  $('#ticket-head').replaceChildren(
    h('h2', {}, tk.priority, ' · ', c.enterprise_name || tk.enterprise_id, ' · ', tk.outlet_id || '', ' · ', label('kind', tk.problem), ' ',
      h('span', { id: 'ticket-status', class: 'state', 'data-status': tk.status }, label('ticket', tk.status))),
    h('dl', { class: 'facts' },
      fact('col.reason_t', label('reason', tk.reason)), fact('col.pollutant', pollutantName(c.pollutant)),
      fact('case.opened', fmtTime(c.opened_at)), fact('col.time', fmtTime(tk.opened_at)),
      fact('form.findings', tk.findings), fact('form.outcome', label('outcome', tk.outcome))),
    h('p', { class: 'muted' }, 'ID ', tk.id, ' · ', c.id || ''),
  );
  renderActions(tk);
  readingsChart(S.readings, { sel: $('#chart-pollutant'), target: $('#chart'), key: tk.id, pollutant: c.pollutant });
  renderEvidence(tk);
  $('#case-history').replaceChildren(...historyItems(c.events || []));
}

function renderActions(tk) {
  const btn = (key, show, fn) => (show ? h('button', { 'data-action': key, onclick: fn }, t(`act.${key}`)) : null);
  $('#ticket-actions').replaceChildren(...[
    btn('accept', tk.status === 'open', () => act({ action: 'accept' })),
    btn('findings', ['accepted', 'findings'].includes(tk.status), async () => {
      const v = await ask(t('act.findings'), [{ name: 'findings', label: 'form.findings', required: true, textarea: true, value: tk.findings || '' }]);
      if (v) act({ action: 'findings', findings: v.findings });
    }),
    btn('close', tk.status === 'findings', async () => {
      const v = await ask(t('act.close'), [{ name: 'outcome', label: 'form.outcome', options: OUTCOMES.map((o) => [o, label('outcome', o)]), value: 'rectified' }]);
      if (v) act({ action: 'close', outcome: v.outcome });
    }),
  ].filter(Boolean));
}

async function act(body) {
  try {
    await api(`/api/tickets/${encodeURIComponent(S.ticketId)}/actions`, { method: 'POST', body });
    toast(t('act.done'));
  } catch (e) {
    failed(e);
  }
  loadTicket(S.ticketId);
}

function renderEvidence(tk) {
  if (!tk.evidence_digest) {
    $('#evidence').replaceChildren(h('p', { class: 'muted' }, t('evidence.pending')));
    return;
  }
  $('#evidence').replaceChildren(
    h('p', {}, t('evidence.digest'), ': ', h('span', { class: 'digest', id: 'evidence-digest' }, tk.evidence_digest)),
    h('button', { id: 'btn-evidence', onclick: () => downloadEvidence(tk) }, t('evidence.download')));
}

// The package needs the token: common.js download fetches it and hands it to the browser as a file.
async function downloadEvidence(tk) {
  const named = (r) => (r.headers.get('content-disposition') || '').match(/filename="?([^";]+)"?/)?.[1] || `evidence-${tk.id}.zip`;
  try {
    await download(`/api/tickets/${encodeURIComponent(tk.id)}/evidence`, named);
  } catch (e) {
    failed(e);
  }
}

function route() {
  const [, view, id] = location.hash.split('/');
  S.ticketId = null;
  if (view === 'ticket' && id) {
    S.ticketId = decodeURIComponent(id);
    showView('ticket', 'tickets');
    loadTicket(S.ticketId);
  } else {
    showView('tickets');
    loadTickets();
  }
}

function renderAll() {
  renderTickets();
  if (S.ticketId && S.ticket) renderTicket();
}

async function main() {
  if (!(await signedInAs('officer'))) return;
  $('#me').textContent = `${S.me.name} (${S.me.officer_id})`;
  document.body.dataset.signedIn = 'yes';
  $('#btn-lang').addEventListener('click', () => switchLang(renderAll));
  $('#chart-pollutant').addEventListener('change', renderTicket);
  window.addEventListener('hashchange', route);
  route();
}

main();
