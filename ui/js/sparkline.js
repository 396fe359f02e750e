// Sparklines drawn straight onto a <canvas> (120x16 CSS px on wide screens,
// narrower on phones; devicePixelRatio aware): one canvas per series, no
// chart library, so hundreds of rows stay cheap. Gaps in the data are drawn
// as breaks, judged by each point's own bucket width (see `runsOf`).

import { level, metricKind } from './format.js';

export const SPARK_WIDTH = 120;
export const SPARK_HEIGHT = 16;

let palette = null;

/** Colours from the CSS custom properties (re-read when the theme changes). */
function colours() {
  if (!palette) {
    const css = getComputedStyle(document.documentElement);
    const get = (name, fallback) => css.getPropertyValue(name).trim() || fallback;
    palette = {
      ok: get('--ok', '#22c55e'),
      warn: get('--warn', '#eab308'),
      crit: get('--crit', '#ef4444'),
      neutral: get('--accent', '#60a5fa'),
      baseline: get('--spark-base', 'rgba(128,128,128,0.25)'),
    };
  }
  return palette;
}
matchMedia('(prefers-color-scheme: light)').addEventListener?.('change', () => {
  palette = null;
});

/** The usual spacing of consecutive timestamps (median), or 0 with fewer than 2 points. */
export function typicalStep(points) {
  const n = points.length;
  if (n < 2) return 0;
  const diffs = new Array(n - 1);
  for (let i = 1; i < n; i++) diffs[i - 1] = points[i].timestamp - points[i - 1].timestamp;
  diffs.sort((a, b) => a - b);
  return diffs[(diffs.length - 1) >> 1];
}

/**
 * Gives each point the bucket it stands for, from the answer's segments
 * (`[{start, tier, width}]`, see docs/api.md): `w`, its width in ms, `tier`,
 * and `seg`, the index of its run. Without segments (an older service)
 * every point is one run of width 0, and gaps fall back to the spacing.
 */
export function applySegments(points, segments) {
  const segs = Array.isArray(segments) ? segments : [];
  let j = -1;
  for (const p of points) {
    while (j + 1 < segs.length && segs[j + 1].start <= p.timestamp) j++;
    const s = segs[j];
    p.w = s ? s.width : 0;
    p.tier = s ? s.tier : undefined;
    p.seg = Math.max(0, j);
  }
  return points;
}

/**
 * Splits points into runs of continuous data. Two neighbours belong to one
 * run unless the second comes more than 2.5x later than the first point's
 * span: the wider of its own bucket width (`w`: a daily bucket stands for a
 * day, a raw point for a second) and the usual spacing within its segment
 * (a collector polling every 10 s leaves 10 s between raw points). So daily
 * buckets followed by hourly ones and minutes at the trailing edge of a 30
 * day chart are one line, and a VM stopped for 20 minutes is a break.
 * `minStep` is a floor for the spacing (the answer's bucket when known only
 * as a whole).
 */
export function runsOf(points, minStep = 0) {
  if (!points.length) return [];
  const steps = new Map();
  let from = 0;
  for (let i = 1; i <= points.length; i++) {
    if (i === points.length || points[i].seg !== points[from].seg) {
      steps.set(points[from].seg, typicalStep(points.slice(from, i)));
      from = i;
    }
  }
  const runs = [];
  let run = [points[0]];
  for (let i = 1; i < points.length; i++) {
    const prev = points[i - 1];
    const span = Math.max(prev.w || 0, steps.get(prev.seg) || 0, minStep);
    if (span > 0 && points[i].timestamp - prev.timestamp > span * 2.5) {
      runs.push(run);
      run = [];
    }
    run.push(points[i]);
  }
  runs.push(run);
  return runs;
}

/** Colour of a series: by threshold for cpu/memory/disk, neutral otherwise. */
export function seriesColour(metric, value) {
  const c = colours();
  if (metricKind(metric) !== 'percent' && !['cpu', 'memory', 'disk'].includes(metric)) return c.neutral;
  return c[level(metric, value)];
}

export function withAlpha(colour, alpha) {
  // Works for #rgb/#rrggbb; other notations get a translucent overlay instead.
  const m = /^#([0-9a-f]{3}|[0-9a-f]{6})$/i.exec(colour);
  if (!m) return colour;
  let hex = m[1];
  if (hex.length === 3) hex = [...hex].map((c) => c + c).join('');
  const n = parseInt(hex, 16);
  return `rgba(${(n >> 16) & 255},${(n >> 8) & 255},${n & 255},${alpha})`;
}

/**
 * Draws `points` ([{timestamp, value, w, seg}], oldest first, see
 * `applySegments`) between `start` and `end` (Unix ms) on a canvas `width`
 * CSS px wide (the stylesheet's width: phones draw narrower). Percent
 * metrics use a fixed 0-100 scale, like Pulse; the others scale to their
 * own maximum.
 */
export function drawSparkline(canvas, points, { start, end, metric, step = 0, width = SPARK_WIDTH }) {
  const dpr = window.devicePixelRatio || 1;
  const w = width;
  const h = SPARK_HEIGHT;
  const pw = Math.round(w * dpr);
  const ph = Math.round(h * dpr);
  if (canvas.width !== pw || canvas.height !== ph) {
    canvas.width = pw;
    canvas.height = ph;
  }
  const ctx = canvas.getContext('2d');
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, h);

  const c = colours();
  ctx.fillStyle = c.baseline;
  ctx.fillRect(0, h - 1, w, 1);

  canvas._spark = { points, start, end, metric, width: w };
  canvas.dataset.points = String(points.length);
  canvas.dataset.drawn = String((Number(canvas.dataset.drawn) || 0) + 1);
  if (!points.length || !(end > start)) {
    canvas.dataset.runs = '0';
    return;
  }

  const kind = metricKind(metric);
  let max = 0;
  for (const p of points) if (p.value > max) max = p.value;
  const top = kind === 'percent' ? Math.max(100, max) : max > 0 ? max * 1.1 : 1;
  const pad = 1.5;
  const x = (t) => ((t - start) / (end - start)) * w;
  const y = (v) => h - pad - (Math.max(0, v) / top) * (h - 2 * pad);
  const last = points[points.length - 1].value;
  const colour = seriesColour(metric, last);

  const runs = runsOf(points, step);
  canvas.dataset.runs = String(runs.length);

  ctx.lineJoin = 'round';
  ctx.lineCap = 'round';
  for (const r of runs) {
    if (r.length === 1) {
      ctx.fillStyle = colour;
      ctx.beginPath();
      ctx.arc(x(r[0].timestamp), y(r[0].value), 1.25, 0, Math.PI * 2);
      ctx.fill();
      continue;
    }
    const area = new Path2D();
    area.moveTo(x(r[0].timestamp), h);
    for (const p of r) area.lineTo(x(p.timestamp), y(p.value));
    area.lineTo(x(r[r.length - 1].timestamp), h);
    area.closePath();
    ctx.fillStyle = withAlpha(colour, 0.16);
    ctx.fill(area);
    ctx.beginPath();
    ctx.moveTo(x(r[0].timestamp), y(r[0].value));
    for (let i = 1; i < r.length; i++) ctx.lineTo(x(r[i].timestamp), y(r[i].value));
    ctx.strokeStyle = colour;
    ctx.lineWidth = 1.25;
    ctx.stroke();
  }
}

/** The point nearest to an x offset (CSS px) on a drawn sparkline, or null. */
export function pointAt(canvas, offsetX) {
  const s = canvas._spark;
  if (!s || !s.points.length) return null;
  const t = s.start + (offsetX / s.width) * (s.end - s.start);
  let best = null;
  let bestDist = Infinity;
  for (const p of s.points) {
    const d = Math.abs(p.timestamp - t);
    if (d < bestDist) {
      best = p;
      bestDist = d;
    }
  }
  const reach = Math.max(best?.w || 0, typicalStep(s.points), (s.end - s.start) / s.width);
  return bestDist <= reach * 1.5 ? best : null;
}
