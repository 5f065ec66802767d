// envwatch statistics page: rates (传输率、有效率), exceedances and case outcomes of a China day or
// month from GET /api/stats; the Excel report from GET /api/reports/{daily,monthly}; print CSS for
// paper. Plain JavaScript, no build step; charts are inline SVG built here.
'use strict';

// common.js (loaded first) gives S, h, t, api, setLang, pollutantName and label; chart.js the SVG builder s.
Object.assign(S, { data: null });
const TZ8 = 8 * 3600e3;

const pct = (x) => (x === null || x === undefined ? '–' : `${(100 * x).toFixed(1)}%`);
const chinaDay = (d) => new Date(d.getTime() + TZ8).toISOString().slice(0, 10);
const LOW = 0.9; // rates below this are highlighted
const STATIONS_SHOWN = 50; // the worst stations on screen; the rest behind "show all"

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
    S.data = await api(`/api/stats?${params()}`);
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
  if (S.lang === 'en') return `${period === 'daily' ? 'Daily' : 'Monthly'} report ${period === 'daily' ? date : month}`;
  if (period === 'daily') { const [y, m, dd] = date.split('-'); return `污染源自动监控日报（${y}年${m}月${dd}日）`; }
  const [y, m] = month.split('-');
  return `污染源自动监控月报（${y}年${m}月）`;
}

function render() {
  const d = S.data;
  if (!d) return;
  $('#report-title').textContent = title(d);
  $('#period-label').textContent = title(d);
  const city = d.rates.city; const cases = d.cases.total;
  const kpi = (key, value, low) => h('div', { class: low ? 'kpi low' : 'kpi', 'data-kpi': key }, h('b', {}, value), h('span', {}, t(`stats.kpi.${key}`)));
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
    h('td', { class: 'num' }, r.received), h('td', { class: 'num' }, r.expected),
    h('td', { class: r.transmission_rate !== null && r.transmission_rate < LOW ? 'num low' : 'num' }, pct(r.transmission_rate)),
    h('td', { class: 'num' }, r.valid_hours), h('td', { class: 'num' }, r.hours - r.stopped_hours),
    h('td', { class: r.valid_rate !== null && r.valid_rate < LOW ? 'num low' : 'num' }, pct(r.valid_rate)),
    h('td', { class: 'num' }, pct(r.transmission_valid_rate))];
  const rateHead = ['received', 'expected', 'transmission', 'valid_hours', 'expected_hours', 'valid', 'both']
    .map((k) => h('th', { class: 'num' }, t(`stats.col.${k}`)));
  table($('#t-enterprises'), [h('th', {}, t('stats.col.enterprise')), ...rateHead],
    d.rates.enterprises.map((r) => [h('td', {}, r.enterprise_name || r.enterprise), ...rateCells(r)]));
  const worst = [...d.rates.stations].sort((a, b) => (a.transmission_valid_rate ?? 2) - (b.transmission_valid_rate ?? 2));
  table($('#t-stations'), [h('th', {}, t('stats.col.enterprise')), h('th', {}, t('stats.col.outlet')),
    h('th', {}, 'MN'), ...rateHead],
  worst.map((r) => [h('td', {}, r.enterprise_name || r.enterprise), h('td', {}, r.outlet_name), h('td', {}, r.mn), ...rateCells(r)]),
  STATIONS_SHOWN);
  table($('#t-exceed'), ['enterprise', 'pollutant', 'kind', 'count'].map((k) => h('th', { class: k === 'count' ? 'num' : null }, t(`stats.col.${k}`))),
    d.exceedances.by_enterprise_pollutant.map((r) => [h('td', {}, r.enterprise_name || r.enterprise),
      h('td', {}, pollutantName(r.pollutant)), h('td', {}, label('kind', r.kind)), h('td', { class: 'num' }, r.count)]));
  const caseKeys = ['opened', 'closed', 'verified', 'dismissed', 'escalated', 'overdue', 'mean_hours_to_close'];
  table($('#t-cases'), [h('th', {}, t('stats.col.enterprise')), ...caseKeys.map((k) => h('th', { class: 'num' }, t(`stats.col.${k}`)))],
    d.cases.enterprises.map((r) => [h('td', {}, d.names[r.enterprise] || r.enterprise),
      ...caseKeys.map((k) => h('td', { class: 'num' }, r[k] ?? '–'))]));
  $('#defs').replaceChildren(...['transmission', 'valid', 'stopped', 'both', 'exceedances', 'cases']
    .map((k) => h('li', {}, h('b', {}, t(`stats.def.${k}.name`)), ' ', t(`stats.def.${k}`))));
}

// Rows past `first` are hidden on screen behind a "show all" row (a city has thousands of stations);
// on paper every row prints.
function table(node, head, rows, first = Infinity) {
  const body = rows.length ? rows.map((cells, i) => h('tr', { class: i >= first ? 'more' : null }, cells))
    : [h('tr', {}, h('td', { colspan: head.length, class: 'muted' }, t('stats.none')))];
  if (rows.length > first) {
    node.classList.remove('expanded');
    body.push(h('tr', { class: 'show-all' }, h('td', { colspan: head.length },
      h('button', { type: 'button', onclick: () => node.classList.add('expanded') },
        t('stats.show_all').replace('{n}', rows.length)))));
  }
  node.replaceChildren(h('thead', {}, h('tr', {}, head)), h('tbody', {}, body));
}

// Vertical bars, one per hour or day; labels thinned so they never overlap.
function barChart(node, items) {
  const W = 560; const H = 200; const L = 30; const B = 22; const T = 10;
  const max = Math.max(1, ...items.map((i) => i.value));
  const g = s('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': t('stats.exceed_series') });
  g.append(s('line', { class: 'axis', x1: L, y1: H - B, x2: W, y2: H - B }));
  for (const v of [0, max]) g.append(s('text', { x: L - 4, y: H - B - (v / max) * (H - B - T) + 4, 'text-anchor': 'end' }, String(v)));
  const bw = (W - L) / Math.max(1, items.length);
  const every = Math.ceil(items.length / 16);
  items.forEach((it, i) => {
    const bh = (it.value / max) * (H - B - T);
    if (it.value > 0) {
      g.append(s('rect', { class: 'bar bad', x: L + i * bw + 1, y: H - B - bh, width: Math.max(1, bw - 2), height: bh, 'data-count': it.value }));
    }
    if (i % every === 0) g.append(s('text', { x: L + i * bw + bw / 2, y: H - 6, 'text-anchor': 'middle' }, it.label));
  });
  node.replaceChildren(g);
}

// Horizontal bars: transmission and valid-data rate per enterprise, worst first.
function rateChart(node, rows) {
  const sorted = [...rows].sort((a, b) => (a.transmission_valid_rate ?? 2) - (b.transmission_valid_rate ?? 2)).slice(0, 15);
  const W = 560; const L = 170; const row = 26; const H = Math.max(60, sorted.length * row + 24);
  const g = s('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': t('stats.rates_chart') });
  const x = (v) => L + (v ?? 0) * (W - L - 50);
  sorted.forEach((r, i) => {
    const y = 8 + i * row;
    const name = r.enterprise_name || r.enterprise;
    g.append(s('text', { x: L - 6, y: y + 14, 'text-anchor': 'end' }, name.length > 14 ? `${name.slice(0, 13)}…` : name));
    g.append(s('rect', { class: 'bar', x: L, y, width: Math.max(0, x(r.transmission_rate) - L), height: 9 }));
    g.append(s('rect', { class: 'bar valid', x: L, y: y + 10, width: Math.max(0, x(r.valid_rate) - L), height: 9 }));
    const end = x(Math.max(r.transmission_rate ?? 0, r.valid_rate ?? 0));
    const inside = end > W - 110; // near the edge: the figures go inside the bar, never cut off
    g.append(s('text', { class: 'value', x: inside ? end - 4 : end + 4, y: y + 14, 'text-anchor': inside ? 'end' : 'start' },
      `${pct(r.transmission_rate)} / ${pct(r.valid_rate)}`));
  });
  g.append(s('text', { x: L, y: H - 4 }, `■ ${t('stats.col.transmission')}  ■ ${t('stats.col.valid')}`));
  node.replaceChildren(g);
}

// The workbook needs the token in a header: common.js download hands it to the browser as a file.
async function downloadXlsx() {
  const { period, date, month } = form();
  const path = period === 'daily' ? `/api/reports/daily?date=${encodeURIComponent(date)}` : `/api/reports/monthly?month=${encodeURIComponent(month)}`;
  try {
    await download(path, `envwatch-${period}-${period === 'daily' ? date : month}.xlsx`);
  } catch (e) {
    $('#stats-error').textContent = e.message; $('#stats-error').hidden = false;
  }
}

function showPicker() {
  const daily = form().period === 'daily';
  $('#pick-day').hidden = !daily; $('#pick-month').hidden = daily;
}

async function main() {
  await setLang(localStorage.getItem(LS.lang) || 'zh-CN');
  S.token = localStorage.getItem(LS.token); // signed in on the board (an operator) or the portal (its enterprise)
  if (!S.token) { $('#signin').hidden = false; $('#controls').hidden = true; return; }
  try {
    S.me = await api('/api/me');
    S.pollutants = await fetch('/board/pollutants').then((r) => r.json());
  } catch (e) { $('#signin').hidden = false; $('#controls').hidden = true; return; }
  $('#me').textContent = S.me.name;
  document.body.dataset.role = S.me.role;
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
  $('#btn-lang').addEventListener('click', () => switchLang(render));
  await load();
}

main();
