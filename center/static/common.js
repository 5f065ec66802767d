// envwatch screens: what the board, the enterprise portal, the officer desk and the statistics share.
// Plain JavaScript, no build step, no CDN; loaded before the page's own script (classic scripts
// share one global scope). Text always enters the DOM as text (h), never as markup.
'use strict';

const STATES = ['open', 'notified', 'acknowledged', 'rectification_reported', 'reopened', 'escalated',
  'verified', 'dismissed'];
const ACTIVE = ['open', 'notified', 'acknowledged', 'rectification_reported', 'reopened'];
const SEVERITIES = ['critical', 'major', 'minor', 'info'];
const TZ = 'Asia/Shanghai'; // the bureau's clock, whatever the browser's
const LS = { token: 'envwatch.token', lang: 'envwatch.lang' };
// Where each role works; the sign-in on / sends a token to its screen.
const HOME = { operator: '/', enterprise: '/portal', officer: '/desk' };

// State every screen has; each page adds its own fields.
// `kinds`: the detector kinds with their labels, as the service declares them (GET /board/kinds).
const S = { token: null, me: null, lang: 'zh-CN', dict: {}, kinds: [], pollutants: {}, enterprises: new Map() };

// -- small helpers ---------------------------------------------------------------------------------

const $ = (sel) => document.querySelector(sel);

// Build DOM nodes; text always goes in as text, so data from the store can never become markup.
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else el.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) {
    if (c !== null && c !== undefined && c !== false) el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

function t(key, fallback) { return S.dict[key] ?? fallback ?? key; }
const label = (prefix, v) => (v ? t(`${prefix}.${v}`, v) : '');
const entName = (id) => (S.enterprises.get(id)?.name || id);

function pollutantName(code) {
  const p = S.pollutants[code];
  if (!p) return code || '';
  return S.lang === 'en' ? p.en : p.zh;
}

function fmtTime(iso, withDate = true) {
  if (!iso) return '';
  const opts = { timeZone: TZ, hour: '2-digit', minute: '2-digit', hour12: false };
  if (withDate) Object.assign(opts, { month: '2-digit', day: '2-digit' });
  return new Intl.DateTimeFormat(S.lang === 'en' ? 'en-GB' : 'zh-CN', opts).format(new Date(iso));
}

// "YYYY-MM-DDTHH:MM" in China time, as the API reads times without an offset.
function chinaLocal(date) {
  const d = new Date(date.getTime() + 8 * 3600e3);
  return d.toISOString().slice(0, 16);
}

function fmtNum(v) {
  if (v === null || v === undefined) return '–';
  return Math.abs(v) >= 100 ? v.toFixed(0) : Math.abs(v) >= 10 ? v.toFixed(1) : v.toFixed(2);
}

function toast(text, bad) {
  const el = $('#toast');
  el.textContent = text;
  el.className = bad ? 'toast bad' : 'toast';
  el.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { el.hidden = true; }, 4000);
}

// What an action that could not be done shows: "failed: <why>".
function failed(e) { toast(`${t('act.failed')}: ${e.message}`, true); }

// One line of a record's facts (<dl class="facts">); nothing when there is no value.
const fact = (key, value) => (value ? [h('dt', {}, t(key)), h('dd', {}, value)] : []);

// -- API -------------------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, detail) { super(detail); this.status = status; }
}

async function api(path, opts = {}) {
  const headers = { Authorization: `Bearer ${S.token}` };
  const form = opts.body instanceof FormData; // multipart: the browser sets the boundary
  if (opts.body !== undefined && !form) headers['Content-Type'] = 'application/json';
  const r = await fetch(path, {
    method: opts.method || 'GET', headers,
    body: opts.body === undefined || form ? opts.body : JSON.stringify(opts.body),
  });
  if (!r.ok) {
    let detail = r.statusText;
    try { detail = (await r.json()).detail ?? detail; } catch (e) { /* not JSON */ }
    throw new ApiError(r.status, typeof detail === 'string' ? detail : JSON.stringify(detail));
  }
  if (r.status === 204) return null;
  const body = await r.json();
  // A paged list: opts.withTotal gives {rows, total}, total being how many match (X-Total-Count).
  return opts.withTotal ? { rows: body, total: Number(r.headers.get('X-Total-Count') ?? body.length) } : body;
}

// A file the API gives only with the token in a header (evidence, reports): fetched here and handed to
// the browser as a download. `name` is the file's name, or a function of the response that picks it.
async function download(path, name) {
  const r = await fetch(path, { headers: { Authorization: `Bearer ${S.token}` } });
  if (!r.ok) throw new ApiError(r.status, `${r.status} ${r.statusText}`);
  const url = URL.createObjectURL(await r.blob());
  const a = h('a', { href: url, download: typeof name === 'function' ? name(r) : name });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10e3);
}

function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== '' && v !== null && v !== undefined) q.set(k, v);
  const s = q.toString();
  return s ? `?${s}` : '';
}

// -- language --------------------------------------------------------------------------------------

async function setLang(lang) {
  const [dict, kinds] = await Promise.all([fetch(`/static/i18n/${lang}.json`).then((r) => r.json()),
    S.kinds.length ? S.kinds : fetch('/board/kinds').then((r) => r.json())]);
  // Kind labels come with the detectors (their tags), the other words from the i18n file.
  for (const k of kinds) dict[`kind.${k.kind}`] = k.labels[lang] ?? k.kind;
  S.dict = dict;
  S.kinds = kinds;
  S.lang = lang;
  document.documentElement.lang = lang;
  document.title = t(document.body.dataset.title || 'title');
  for (const el of document.querySelectorAll('[data-i18n]')) el.textContent = t(el.dataset.i18n);
}

// Switch zh-CN <-> en, remembered on this browser; `rerender` redraws the page's data.
async function switchLang(rerender) {
  const lang = S.lang === 'zh-CN' ? 'en' : 'zh-CN';
  localStorage.setItem(LS.lang, lang); // remembered across visits
  await setLang(lang);
  if (S.me) rerender();
}

// Show one <section class="view">; `tab` is the tab to mark (a detail view marks its list's tab).
function showView(name, tab = name) {
  for (const v of document.querySelectorAll('.view')) v.hidden = v.id !== `view-${name}`;
  for (const a of document.querySelectorAll('[data-tab]')) a.classList.toggle('on', a.dataset.tab === tab);
  document.body.dataset.view = name;
}

// For the portal and the desk: the stored token's user, when it has `role`; else off to its own screen.
async function signedInAs(role) {
  await setLang(localStorage.getItem(LS.lang) || 'zh-CN');
  S.token = localStorage.getItem(LS.token);
  let me = null;
  try {
    me = S.token ? await api('/api/me') : null;
  } catch (e) {
    me = null;
  }
  if (!me || me.role !== role) {
    if (!me) localStorage.removeItem(LS.token);
    location.replace(me ? HOME[me.role] : '/');
    return false;
  }
  S.me = me;
  if (!localStorage.getItem(LS.lang) && me.language && me.language !== S.lang) await setLang(me.language);
  S.pollutants = await fetch('/board/pollutants').then((r) => r.json());
  $('#btn-logout').addEventListener('click', () => { localStorage.removeItem(LS.token); location.replace('/'); });
  return true;
}

const byNewest = (key) => (a, b) => (a[key] < b[key] ? 1 : a[key] > b[key] ? -1 : 0);

// A case's history, notices and answers as list items (the board, the portal and the desk show them alike).
function historyItems(events) {
  return events.map((e) => h('li', { 'data-event': e.type },
    h('span', { class: 'time' }, fmtTime(e.at)), ' ', h('b', {}, label('event', e.type)), ' ',
    h('span', { class: 'muted' }, e.actor), ' ', eventDetail(e.data)));
}

const noneItem = () => [h('li', { class: 'muted' }, t('case.none'))];

function noticeItems(notices) {
  return notices.length ? notices.map((n) => h('li', { 'data-notice-id': n.id },
    h('details', {}, h('summary', {}, fmtTime(n.created_at), ' ', label('notice_kind', n.kind), ': ', n.subject, ' → ', n.recipient, ' (', n.channel, ', ',
      label('notice', n.status), ')'), h('pre', {}, n.body)))) : noneItem();
}

function answerItems(answers) {
  return answers.length ? answers.map((a) => h('li', { 'data-answer-id': a.id },
    fmtTime(a.received_at), ' ', h('b', {}, label('answer', a.type)), ' ', a.text,
    a.attachments.length ? h('span', { class: 'muted' }, ` (${t('filing.attachment')}: ${a.attachments.map((x) => x.name).join(', ')})`) : null))
    : noneItem();
}

// A case's history as text: what changed, and a person's words where there are some.
function eventDetail(d) {
  const parts = [];
  if (d.from && d.to && d.from !== d.to) parts.push(`${label('state', d.from)} → ${label('state', d.to)}`);
  if (d.kind && !d.alert_id) parts.push(label('notice_kind', d.kind));
  if (d.reason && S.dict[`reason.${d.reason}`]) parts.push(label('reason', d.reason));
  if (d.alert_id) parts.push(`${pollutantName(d.pollutant)} ${fmtNum(d.value)}${d.limit ? ` / ${fmtNum(d.limit)}` : ''} ${d.unit || ''}`);
  if (d.confidence === 'low') parts.push(label('confidence', d.confidence)); // a cold-start model's finding
  if (d.reason && !S.dict[`reason.${d.reason}`]) parts.push(String(d.reason)); // a person's words
  for (const k of ['assignee', 'priority', 'text', 'recommendation', 'outcome', 'emergency_level']) {
    if (d[k] && typeof d[k] !== 'object') parts.push(String(d[k]));
  }
  return parts.length ? h('span', {}, parts.join(' · ')) : '';
}

// A filing's kind, period (marked when filed after the fact), reason with its attachment, and phase:
// the cells the board's and the portal's filing tables share.
function filingCells(f) {
  return [
    h('td', {}, label('filing.kind', f.kind)),
    h('td', {}, `${fmtTime(f.start)} – ${fmtTime(f.end)}`,
      f.after_the_fact ? h('span', { class: 'badge late', 'data-after-the-fact': '' }, t('filing.after')) : null),
    h('td', {}, f.reason, f.attachment ? h('span', { class: 'muted' }, ` (${t('filing.attachment')}: ${f.attachment.name})`) : null),
    h('td', {}, h('span', { class: `phase phase-${f.phase}` }, label('filing.phase', f.phase))),
  ];
}

// -- the dialog ------------------------------------------------------------------------------------

// Ask for a few values in the shared <dialog>; resolves to {name: value} or null when cancelled.
function ask(title, fields) {
  const dlg = $('#dialog');
  $('#dialog-title').textContent = title;
  $('#dialog-error').hidden = true;
  $('#dialog-fields').replaceChildren(...fields.map((f) => {
    let input;
    if (f.options) input = h('select', { name: f.name }, f.options.map(([v, text]) => h('option', { value: v }, text)));
    else if (f.textarea) input = h('textarea', { name: f.name, rows: 3, required: f.required });
    else input = h('input', { name: f.name, type: f.type || 'text', required: f.required });
    input.value = f.value ?? '';
    return h('label', {}, h('span', {}, t(f.label)), input);
  }));
  dlg.showModal();
  return new Promise((resolve) => {
    dlg.addEventListener('close', () => {
      if (dlg.returnValue !== 'ok') { resolve(null); return; }
      const form = $('#dialog-form');
      resolve(Object.fromEntries(fields.map((f) => [f.name, form.elements[f.name].value.trim()])));
    }, { once: true });
  });
}
