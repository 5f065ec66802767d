// envwatch screens: the readings chart of a case (SVG, no library), shared by the board, the
// enterprise portal and the officer desk. Needs common.js (h, t, label, pollutantName, fmtTime, fmtNum).
'use strict';

// Draw `r` (GET /api/cases/{id}/readings or /api/tickets/{id}/readings) into `target`, with the
// pollutant picked in `sel`: kept while the chart stays on the same `key` (a case), else the case's own.
function readingsChart(r, { sel, target, key, pollutant }) {
  const codes = [...new Set(r.series.map((x) => x.pollutant))];
  const want = sel.dataset.key === key && codes.includes(sel.value) ? sel.value
    : (codes.includes(pollutant) ? pollutant : (r.windows[0]?.pollutant && codes.includes(r.windows[0].pollutant) ? r.windows[0].pollutant : codes[0]));
  sel.replaceChildren(...codes.map((c) => h('option', { value: c }, pollutantName(c))));
  sel.value = want || '';
  sel.dataset.key = key;
  sel.hidden = codes.length === 0;
  // The limit applies to the O2-corrected value (zs_avg) where there is one, else to avg: plot
  // only that field, so the line drawn is the one compared with the limit.
  const mine = r.series.filter((x) => x.pollutant === want && x.points.length);
  const series = mine.filter((x) => x.field === 'zs_avg'
    || !mine.some((y) => y.field === 'zs_avg' && y.measurement === x.measurement && y.mn === x.mn));
  const lim = r.limits[want] || {};
  const lines = series.map((x) => ({
    cls: x.measurement === 'station_hour' ? 'hour' : 'minute',
    label: `${t(x.measurement === 'station_hour' ? 'case.chart.hour' : 'case.chart.minute')} ${x.field === 'zs_avg' ? t('case.chart.zs') : ''} (${x.mn})`,
    points: x.points.map(([tm, v]) => [Date.parse(tm), v]),
  }));
  const hlines = [];
  if (lim.hourly) hlines.push({ y: lim.hourly, label: `${t('case.chart.limit')} ${lim.hourly} ${lim.unit || ''} (${lim.standard || ''})` });
  if (lim.daily && lim.daily !== lim.hourly) hlines.push({ y: lim.daily, label: `${t('case.chart.limit')} (24h) ${lim.daily}`, cls: 'daily' });
  const bands = r.windows.map((w) => ({ x0: Date.parse(w.start), x1: Date.parse(w.end), label: label('kind', w.kind) }));
  target.replaceChildren(lines.length ? lineChart(lines, hlines, bands) : h('p', { class: 'muted' }, t('case.chart.empty')));
}

const SVGNS = 'http://www.w3.org/2000/svg';
function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs || {})) if (v !== null && v !== undefined) el.setAttribute(k, v);
  for (const c of children.flat()) if (c !== null && c !== undefined) el.append(c instanceof Node ? c : String(c));
  return el;
}

function niceTicks(lo, hi, n) {
  const span = hi - lo || 1;
  const step0 = span / n;
  const mag = 10 ** Math.floor(Math.log10(step0));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((st) => st >= step0);
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + 1e-9; v += step) out.push(+v.toFixed(10));
  return out;
}

function lineChart(lines, hlines, bands) {
  const W = 960; const H = 300; const L = 56; const R = 16; const T = 28; const B = 30;
  const xs = lines.flatMap((l) => l.points.map((p) => p[0])).concat(bands.flatMap((b) => [b.x0, b.x1]));
  const ys = lines.flatMap((l) => l.points.map((p) => p[1])).concat(hlines.map((l) => l.y));
  const x0 = Math.min(...xs); const x1 = Math.max(...xs);
  const y0 = Math.min(0, ...ys); const y1 = Math.max(...ys) * 1.1 || 1;
  const X = (v) => L + ((v - x0) / (x1 - x0 || 1)) * (W - L - R);
  const Y = (v) => T + (1 - (v - y0) / (y1 - y0 || 1)) * (H - T - B);
  const g = [];
  for (const v of niceTicks(y0, y1, 5)) {
    g.push(s('line', { x1: L, x2: W - R, y1: Y(v), y2: Y(v), class: 'grid' }), s('text', { x: L - 6, y: Y(v) + 4, class: 'tick', 'text-anchor': 'end' }, fmtNum(v)));
  }
  const hour = 3600e3;
  const stepH = Math.max(1, Math.ceil((x1 - x0) / hour / 10));
  for (let v = Math.ceil(x0 / hour) * hour; v <= x1; v += stepH * hour) {
    g.push(s('line', { x1: X(v), x2: X(v), y1: T, y2: H - B, class: 'grid' }),
      s('text', { x: X(v), y: H - B + 16, class: 'tick', 'text-anchor': 'middle' }, fmtTime(new Date(v).toISOString(), false)));
  }
  for (const b of bands) {
    g.push(s('rect', { x: X(b.x0), y: T, width: Math.max(2, X(b.x1) - X(b.x0)), height: H - T - B, class: 'band' },
      s('title', {}, `${t('case.chart.window')}: ${b.label}`)));
  }
  for (const l of lines) {
    // An hourly mean holds for its whole hour (stamped with the hour's start): draw it as a step.
    const pts = l.cls === 'hour' ? l.points.flatMap(([x, y]) => [[x, y], [Math.min(x + hour, x1), y]]) : l.points;
    const d = pts.map((p, i) => `${i ? 'L' : 'M'}${X(p[0]).toFixed(1)},${Y(p[1]).toFixed(1)}`).join('');
    g.push(s('path', { d, class: `series ${l.cls}` }, s('title', {}, l.label)));
  }
  for (const l of hlines) {
    g.push(s('line', { x1: L, x2: W - R, y1: Y(l.y), y2: Y(l.y), class: `limit ${l.cls || ''}` }),
      s('text', { x: W - R - 4, y: Y(l.y) - 5, class: 'limit-label', 'text-anchor': 'end' }, l.label));
  }
  const legend = lines.map((l, i) => s('text', { x: L + i * 300, y: 16, class: `legend ${l.cls}` }, `— ${l.label}`));
  return s('svg', { viewBox: `0 0 ${W} ${H}`, class: 'chart-svg', role: 'img' }, g, legend);
}
