// envwatch statistics page: rates (传输率、有效率), exceedances and case outcomes of a China day or
// month from GET /api/stats; the Excel report from GET /api/reports/{daily,monthly}; print CSS for
// paper. Plain JavaScript, no build step; charts are inline SVG built here.
'use strict';

const ST = { token: localStorage.getItem('envwatch.token'), lang: localStorage.getItem('envwatch.lang') || 'zh-CN',
  dict: {}, pollutants: {}, me: null, data: null };
const TZ8 = 8 * 3600e3;
const SVG = 'http://www.w3.org/2000/svg';
const $ = (sel) => document.querySelector(sel);
const tr = (key, fallback) => ST.dict[key] ?? fallback ?? key;

// Text always enters the DOM as text: names come from the registry, which enterprises help fill.
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) if (v !== null && v !== undefined) node.setAttribute(k, v);
  for (const c of children.flat()) if (c !== null && c !== undefined) node.append(c instanceof Node ? c : String(c));
  return node;
}

function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

async function getJSON(path) {
  const r = await fetch(path, { headers: { Authorization: `Bearer ${ST.token}` } });
  if (!r.ok) {
    let detail = r.statusText;
    try { detail = (await r.json()).detail ?? detail; } catch (e) { /* not JSON */ }
    throw Object.assign(new Error(typeof detail === 'string' ? detail : JSON.stringify(detail)), { status: r.status });
  }
  return r.json();
}

async function setLang(lang) {
  const [board, own] = await Promise.all([`/static/i18n/${lang}.json`, `/static/i18n/stats.${lang}.json`]
    .map((u) => fetch(u).then((r) => r.json())));
  ST.dict = { ...board, ...own };
  ST.lang = lang;
  document.documentElement.lang = lang;
  document.title = tr('stats.title');
  for (const node of document.querySelectorAll('[data-i18n]')) node.textContent = tr(node.dataset.i18n);
}

const pct = (x) => (x === null || x === undefined ? '–' : `${(100 * x).toFixed(1)}%`);
const pollutant = (code) => { const p = ST.pollutants[code]; return p ? (ST.lang === 'en' ? p.en : p.zh) : code; };
const kindName = (k) => tr(`kind.${k}`, k);
const chinaDay = (d) => new Date(d.getTime() + TZ8).toISOString().slice(0, 10);
const LOW = 0.9; // rates below this are highlighted

function form() {
  const f = $('#controls');
  return { period: f.period.value, date: f.date.value, month: f.month.value };
}

function params() {
  const { period, date, month } = form();
  return period === 'daily' ? `period=daily&date=${encodeURIComponent(date)}`
    : `period=monthly&month=${encodeURIComponent(month)}`;
}

async function load() {
  $('#stats-error').hidden = true;
  try {
    ST.data = await getJSON(`/api/stats?${params()}`);
  } catch (e) {
    $('#stats-error').textContent = e.message;
    $('#stats-error').hidden = false;
    return;
  }
  const q = new URLSearchParams(params());
  history.replaceState(null, '', `?${q.toString()}`);
  render();
}

function title(d) {
  const { period, date, month } = form();
  if (ST.lang === 'en') return `${period === 'daily' ? 'Daily' : 'Monthly'} report ${period === 'daily' ? date : month}`;
  if (period === 'daily') { const [y, m, dd] = date.split('-'); return `污染源自动监控日报（${y}年${m}月${dd}日）`; }
  const [y, m] = month.split('-');
  return `污染源自动监控月报（${y}年${m}月）`;
}

function render() {
  const d = ST.data;
  if (!d) return;
  $('#report-title').textContent = title(d);
  $('#period-label').textContent = title(d);
  const city = d.rates.city; const cases = d.cases.total;
  const kpi = (key, value, low) => el('div', { class: low ? 'kpi low' : 'kpi', 'data-kpi': key }, el('b', {}, value), el('span', {}, tr(`stats.kpi.${key}`)));
  $('#kpis').replaceChildren(
    kpi('transmission', pct(city.transmission_rate), city.transmission_rate !== null && city.transmission_rate < LOW),
    kpi('valid', pct(city.valid_rate), city.valid_rate !== null && city.valid_rate < LOW),
    kpi('both', pct(city.transmission_valid_rate), false),
    kpi('exceedances', d.exceedances.total, d.exceedances.total > 0),
    kpi('opened', cases.opened, false),
    kpi('closed', cases.closed, false),
    kpi('overdue', cases.overdue, cases.overdue > 0),
    kpi('hours_to_close', cases.mean_hours_to_close ?? '–', false),
  );
  barChart($('#chart-exceed'), d.exceedances.series.map((b) => ({
    label: d.period === 'daily' ? new Date(Date.parse(b.start) + TZ8).toISOString().slice(11, 13)
      : new Date(Date.parse(b.start) + TZ8).toISOString().slice(8, 10),
    value: b.count })));
  rateChart($('#chart-rates'), d.rates.enterprises);
  const rateCells = (r) => [
    el('td', { class: 'num' }, r.received), el('td', { class: 'num' }, r.expected),
    el('td', { class: r.transmission_rate !== null && r.transmission_rate < LOW ? 'num low' : 'num' }, pct(r.transmission_rate)),
    el('td', { class: 'num' }, r.valid_hours), el('td', { class: 'num' }, r.hours - r.stopped_hours),
    el('td', { class: r.valid_rate !== null && r.valid_rate < LOW ? 'num low' : 'num' }, pct(r.valid_rate)),
    el('td', { class: 'num' }, pct(r.transmission_valid_rate))];
  const rateHead = ['received', 'expected', 'transmission', 'valid_hours', 'expected_hours', 'valid', 'both']
    .map((k) => el('th', { class: 'num' }, tr(`stats.col.${k}`)));
  table($('#t-enterprises'), [el('th', {}, tr('stats.col.enterprise')), ...rateHead],
    d.rates.enterprises.map((r) => [el('td', {}, r.enterprise_name || r.enterprise), ...rateCells(r)]));
  const worst = [...d.rates.stations].sort((a, b) => (a.transmission_valid_rate ?? 2) - (b.transmission_valid_rate ?? 2));
  table($('#t-stations'), [el('th', {}, tr('stats.col.enterprise')), el('th', {}, tr('stats.col.outlet')),
    el('th', {}, 'MN'), ...rateHead],
  worst.map((r) => [el('td', {}, r.enterprise_name || r.enterprise), el('td', {}, r.outlet_name), el('td', {}, r.mn), ...rateCells(r)]));
  table($('#t-exceed'), ['enterprise', 'pollutant', 'kind', 'count'].map((k) => el('th', { class: k === 'count' ? 'num' : null }, tr(`stats.col.${k}`))),
    d.exceedances.by_enterprise_pollutant.map((r) => [el('td', {}, r.enterprise_name || r.enterprise),
      el('td', {}, pollutant(r.pollutant)), el('td', {}, kindName(r.kind)), el('td', { class: 'num' }, r.count)]));
  const caseKeys = ['opened', 'closed', 'verified', 'dismissed', 'escalated', 'overdue', 'mean_hours_to_close'];
  table($('#t-cases'), [el('th', {}, tr('stats.col.enterprise')), ...caseKeys.map((k) => el('th', { class: 'num' }, tr(`stats.col.${k}`)))],
    d.cases.enterprises.map((r) => [el('td', {}, d.names[r.enterprise] || r.enterprise),
      ...caseKeys.map((k) => el('td', { class: 'num' }, r[k] ?? '–'))]));
  $('#defs').replaceChildren(...['transmission', 'valid', 'stopped', 'both', 'exceedances', 'cases']
    .map((k) => el('li', {}, el('b', {}, tr(`stats.def.${k}.name`)), ' ', tr(`stats.def.${k}`))));
}

function table(node, head, rows) {
  node.replaceChildren(el('thead', {}, el('tr', {}, head)),
    el('tbody', {}, rows.length ? rows.map((cells) => el('tr', {}, cells))
      : el('tr', {}, el('td', { colspan: head.length, class: 'muted' }, tr('stats.none')))));
}

// Vertical bars, one per hour or day; labels thinned so they never overlap.
function barChart(node, items) {
  const W = 560; const H = 200; const L = 30; const B = 22; const T = 10;
  const max = Math.max(1, ...items.map((i) => i.value));
  const s = svg('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': tr('stats.exceed_series') });
  s.append(svg('line', { class: 'axis', x1: L, y1: H - B, x2: W, y2: H - B }));
  for (const v of [0, max]) s.append(svg('text', { x: L - 4, y: H - B - (v / max) * (H - B - T) + 4, 'text-anchor': 'end' }, String(v)));
  const bw = (W - L) / Math.max(1, items.length);
  const every = Math.ceil(items.length / 16);
  items.forEach((it, i) => {
    const bh = (it.value / max) * (H - B - T);
    if (it.value > 0) {
      s.append(svg('rect', { class: 'bar bad', x: L + i * bw + 1, y: H - B - bh, width: Math.max(1, bw - 2), height: bh, 'data-count': it.value }));
    }
    if (i % every === 0) s.append(svg('text', { x: L + i * bw + bw / 2, y: H - 6, 'text-anchor': 'middle' }, it.label));
  });
  node.replaceChildren(s);
}

// Horizontal bars: transmission and valid-data rate per enterprise, worst first.
function rateChart(node, rows) {
  const sorted = [...rows].sort((a, b) => (a.transmission_valid_rate ?? 2) - (b.transmission_valid_rate ?? 2)).slice(0, 15);
  const W = 560; const L = 170; const row = 26; const H = Math.max(60, sorted.length * row + 24);
  const s = svg('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': tr('stats.rates_chart') });
  const x = (v) => L + (v ?? 0) * (W - L - 50);
  sorted.forEach((r, i) => {
    const y = 8 + i * row;
    const name = r.enterprise_name || r.enterprise;
    s.append(svg('text', { x: L - 6, y: y + 14, 'text-anchor': 'end' }, name.length > 14 ? `${name.slice(0, 13)}…` : name));
    s.append(svg('rect', { class: 'bar', x: L, y, width: Math.max(0, x(r.transmission_rate) - L), height: 9 }));
    s.append(svg('rect', { class: 'bar valid', x: L, y: y + 10, width: Math.max(0, x(r.valid_rate) - L), height: 9 }));
    s.append(svg('text', { class: 'value', x: x(Math.max(r.transmission_rate ?? 0, r.valid_rate ?? 0)) + 4, y: y + 14 },
      `${pct(r.transmission_rate)} / ${pct(r.valid_rate)}`));
  });
  s.append(svg('text', { x: L, y: H - 4 }, `■ ${tr('stats.col.transmission')}  ■ ${tr('stats.col.valid')}`));
  node.replaceChildren(s);
}

// The workbook comes with the token in a header, so it is fetched and handed to the browser as a blob.
async function downloadXlsx() {
  const { period, date, month } = form();
  const path = period === 'daily' ? `/api/reports/daily?date=${encodeURIComponent(date)}` : `/api/reports/monthly?month=${encodeURIComponent(month)}`;
  const r = await fetch(path, { headers: { Authorization: `Bearer ${ST.token}` } });
  if (!r.ok) { $('#stats-error').textContent = `${r.status} ${r.statusText}`; $('#stats-error').hidden = false; return; }
  const url = URL.createObjectURL(await r.blob());
  const a = el('a', { href: url, download: `envwatch-${period}-${period === 'daily' ? date : month}.xlsx` });
  document.body.append(a); a.click(); a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

function showPicker() {
  const daily = form().period === 'daily';
  $('#pick-day').hidden = !daily; $('#pick-month').hidden = daily;
}

async function main() {
  await setLang(ST.lang);
  if (!ST.token) { $('#signin').hidden = false; $('#controls').hidden = true; return; }
  try {
    ST.me = await getJSON('/api/me');
    ST.pollutants = await fetch('/board/pollutants').then((r) => r.json());
  } catch (e) { $('#signin').hidden = false; $('#controls').hidden = true; return; }
  $('#me').textContent = ST.me.name;
  document.body.dataset.role = ST.me.role;
  const f = $('#controls');
  const q = new URLSearchParams(location.search);
  const today = chinaDay(new Date());
  f.period.value = q.get('period') === 'monthly' ? 'monthly' : 'daily';
  f.date.value = q.get('date') || today;
  f.month.value = q.get('month') || today.slice(0, 7);
  showPicker();
  f.period.addEventListener('change', () => { showPicker(); load(); });
  f.addEventListener('submit', (e) => { e.preventDefault(); load(); });
  $('#btn-xlsx').addEventListener('click', downloadXlsx);
  $('#btn-print').addEventListener('click', () => window.print());
  $('#btn-lang').addEventListener('click', async () => {
    const lang = ST.lang === 'zh-CN' ? 'en' : 'zh-CN';
    localStorage.setItem('envwatch.lang', lang);
    await setLang(lang);
    render();
  });
  await load();
}

main();
