// Map labels that never hide each other: a greedy placement over candidate positions around each
// point (the classic point-feature labelling heuristic). Labels that must show (the enterprises a
// hotspot is attributed to, then the hotspots) are placed first and may move further out with a
// leader line; an optional label that finds no free place is left out (its point keeps a tooltip).
// Every label stays inside the map. Pure geometry: the board measures the text, this places it.
'use strict';

// Directions tried in order: right, left, above, below, then the diagonals (cartographic preference).
const LABEL_DIRS = [[1, 0], [-1, 0], [0, -1], [0, 1], [1, -1], [-1, -1], [1, 1], [-1, 1]];
const LABEL_RINGS = [0, 14, 30, 50, 76]; // extra distance from the point; beyond the first, a leader line

function boxesOverlap(a, b, gap = 1) {
  return a.x < b.x + b.w + gap && b.x < a.x + a.w + gap && a.y < b.y + b.h + gap && b.y < a.y + a.h + gap;
}

// labels: [{x, y, w, h, r, must}] (point, measured text size, marker radius, whether it must show).
// obstacles: boxes of markers and other things labels must not cover. Returns, per label, its box
// {x, y, w, h, leader} or null when an optional label has no free place.
function placeLabels(labels, width, height, obstacles = [], margin = 2) {
  const placed = [];
  const taken = obstacles.slice();
  const order = labels.map((l, i) => i).sort((a, b) => (labels[b].must ? 1 : 0) - (labels[a].must ? 1 : 0));
  const out = new Array(labels.length).fill(null);
  for (const i of order) {
    const l = labels[i];
    const rings = l.must ? LABEL_RINGS : LABEL_RINGS.slice(0, 2);
    let best = null;
    for (const ring of rings) {
      for (const [dx, dy] of LABEL_DIRS) {
        const d = (l.r || 3) + 3 + ring;
        let x = dx > 0 ? l.x + d : dx < 0 ? l.x - d - l.w : l.x - l.w / 2;
        let y = dy > 0 ? l.y + d : dy < 0 ? l.y - d - l.h : l.y - l.h / 2;
        if (dx !== 0 && dy !== 0) { x = dx > 0 ? l.x + d * 0.7 : l.x - d * 0.7 - l.w; y = dy > 0 ? l.y + d * 0.7 : l.y - d * 0.7 - l.h; }
        const box = { x, y, w: l.w, h: l.h, leader: ring > 0 };
        if (x < margin || y < margin || x + l.w > width - margin || y + l.h > height - margin) continue;
        if (taken.some((b) => boxesOverlap(box, b))) continue;
        best = box;
        break;
      }
      if (best) break;
    }
    if (!best && l.must) { // nowhere free: still shown, kept inside the map (never cut off)
      const x = Math.min(Math.max(margin, l.x + (l.r || 3) + 3), width - margin - l.w);
      const y = Math.min(Math.max(margin, l.y - l.h / 2), height - margin - l.h);
      best = { x, y, w: l.w, h: l.h, leader: false };
    }
    if (best) { taken.push(best); placed.push(best); out[i] = best; }
  }
  return out;
}

if (typeof module !== 'undefined') module.exports = { placeLabels, boxesOverlap };
