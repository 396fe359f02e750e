// The detail chart of one resource: mean line with the min-max band (uPlot),
// gaps drawn as breaks, a tooltip with time, mean, min, max, count and tier.

import { api, withQuery } from './api.js';
import {
  THRESHOLDS,
  formatCount,
  formatDateTime,
  formatPercent,
  formatPointTime,
  formatRelative,
  formatValue,
  metricKind,
  metricLabel,
  spansDays,
  resourceLabel,
  timeAxisLabels,
} from './format.js';
import { applySegments, runsOf, withAlpha } from './sparkline.js';
import { rangeBounds, rangeParams } from './state.js';

const TYPE_LABELS = {
  node: 'Node',
  vm: 'VM',
  container: 'Container',
  storage: 'Storage',
  dockerHost: 'Docker host',
  dockerContainer: 'Docker container',
};

let uplotLoading = null;

/** Loads the vendored uPlot once, on the first detail chart. */
function loadUPlot() {
  if (window.uPlot) return Promise.resolve(window.uPlot);
  uplotLoading ??= new Promise((resolve, reject) => {
    const css = document.createElement('link');
    css.rel = 'stylesheet';
    css.href = '/vendor/uplot/uPlot.min.css';
    document.head.append(css);
    const script = document.createElement('script');
    script.src = '/vendor/uplot/uPlot.iife.min.js';
    script.onload = () => resolve(window.uPlot);
    script.onerror = () => {
      uplotLoading = null;
      reject(new Error('Could not load the chart library (/vendor/uplot/uPlot.iife.min.js)'));
    };
    document.head.append(script);
  });
  return uplotLoading;
}

function cssVar(name, fallback) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim() || fallback;
}

/**
 * Turns history points into uPlot's columns (seconds on x), inserting a null
 * between runs of continuous data (see `runsOf`: each point's own bucket
 * width decides, so daily buckets beside hourly ones are one line and a
 * stopped VM is a break), and padding the window's start and end so the
 * chart spans the whole range. `segments` come from the answer (history
 * with `segments=true`); `minStep` is a spacing floor used without them.
 */
export function toColumns(points, startMs, endMs, segments, minStep = 0) {
  const xs = [];
  const mean = [];
  const min = [];
  const max = [];
  const count = [];
  const tiers = [];
  const push = (t, p) => {
    xs.push(t / 1000);
    mean.push(p ? p.value : null);
    min.push(p ? (p.min ?? p.value) : null);
    max.push(p ? (p.max ?? p.value) : null);
    count.push(p ? (p.count ?? 1) : null);
    tiers.push(p ? p.tier : null);
  };
  applySegments(points, segments);
  const runs = runsOf(points, segments ? 0 : minStep);
  if (points.length && startMs < points[0].timestamp) push(startMs, null);
  runs.forEach((run, i) => {
    if (i > 0) {
      const prev = runs[i - 1][runs[i - 1].length - 1];
      push(prev.timestamp + (run[0].timestamp - prev.timestamp) / 2, null);
    }
    for (const p of run) push(p.timestamp, p);
  });
  if (points.length && endMs > points[points.length - 1].timestamp) push(endMs, null);
  return { data: [xs, mean, min, max], count, tiers, gaps: Math.max(0, runs.length - 1) };
}

export class Detail {
  constructor(ctx) {
    this.ctx = ctx;
    this.dialog = document.getElementById('detail');
    this.chartEl = this.dialog.querySelector('.detail-chart');
    this.tabsEl = this.dialog.querySelector('.metric-tabs');
    this.summaryEl = this.dialog.querySelector('.detail-summary');
    this.plot = null;
    this.target = null;
    this.seq = 0;
    this.zoomed = false;
    this.dialog.querySelector('[data-close]').addEventListener('click', () => this.dialog.close());
    this.dialog.addEventListener('click', (e) => {
      if (e.target === this.dialog) this.dialog.close();
    });
    this.dialog.addEventListener('close', () => {
      this.target = null;
      this.destroyPlot();
      this.ctx.banner.clear('detail');
    });
    this.tabsEl.addEventListener('click', (e) => {
      const b = e.target.closest('button[data-metric]');
      if (b && this.target) {
        this.target.metric = b.dataset.metric;
        this.zoomed = false;
        this.load();
      }
    });
    new ResizeObserver(() => {
      if (this.plot) {
        const w = this.chartEl.clientWidth;
        if (w && Math.abs(w - this.plot.width) > 2) this.plot.setSize({ width: w, height: this.chartHeight() });
      }
    }).observe(this.chartEl);
  }

  chartHeight() {
    return window.innerWidth < 600 ? 220 : 320;
  }

  /** Opens the chart of `{type, id, metric, metrics}`. */
  open(target) {
    this.target = { ...target };
    this.zoomed = false;
    // The name first ("web01"); type, VMID, node and id after it.
    const { name, context } = resourceLabel(target.type, target.id, target.meta);
    this.dialog.querySelector('#detail-title').textContent = name;
    const { state } = this.ctx;
    const range = state.range === 'custom' ? `${formatDateTime(state.start)} – ${formatDateTime(state.end)}` : `last ${state.range}`;
    const named = !!target.meta?.name;
    // "VM 101 · pve-a" already says what it is.
    const typed = named && /^(VM|CT) \d/.test(context);
    this.dialog.querySelector('.detail-sub').textContent = [
      typed ? null : TYPE_LABELS[target.type] ?? target.type,
      named ? context || null : null,
      target.id !== name ? target.id : context || null,
      range,
    ]
      .filter(Boolean)
      .join(' · ');
    if (!this.dialog.open) this.dialog.showModal();
    this.load();
  }

  refreshIfOpen() {
    if (this.dialog.open && this.target && !this.zoomed) this.load(true);
  }

  renderTabs() {
    const { metric, metrics } = this.target;
    this.tabsEl.replaceChildren(
      ...metrics.map((m) => {
        const b = document.createElement('button');
        b.type = 'button';
        b.role = 'tab';
        b.dataset.metric = m;
        b.textContent = metricLabel(m);
        b.setAttribute('aria-selected', String(m === metric));
        return b;
      }),
    );
  }

  async load(quiet = false) {
    const seq = ++this.seq;
    const { type, id, metric } = this.target;
    this.renderTabs();
    const width = Math.max(200, this.chartEl.clientWidth || 800);
    const path = withQuery('/api/metrics-store/history', {
      resourceType: type,
      resourceId: id,
      metric,
      ...rangeParams(this.ctx.state),
      maxPoints: Math.min(1000, Math.round(width)),
      segments: true,
    });
    if (!quiet) {
      this.chartEl.dataset.state = 'loading';
      this.summaryEl.textContent = 'Loading…';
    }
    let history;
    let uPlot;
    try {
      [history, uPlot] = await Promise.all([api.get(path), loadUPlot()]);
    } catch (e) {
      if (seq !== this.seq) return;
      this.ctx.banner.show(e, 'detail');
      this.summaryEl.textContent = `Could not load: ${e.message}`;
      this.chartEl.dataset.state = 'error';
      return;
    }
    if (seq !== this.seq || !this.dialog.open) return;
    this.ctx.banner.clear('detail');
    this.draw(uPlot, history, width);
  }

  draw(uPlot, history, width) {
    const metric = this.target.metric;
    const points = history.points || [];
    const now = Date.now();
    const [rs, re] = rangeBounds(this.ctx.state, now);
    const startMs = Number.isFinite(history.start) ? history.start : rs;
    const endMs = Number.isFinite(history.end) ? history.end : re;
    const bucketMs = (endMs - startMs) / Math.max(1, Math.min(1000, Math.round(width)));
    const { data, count, tiers, gaps } = toColumns(points, startMs, endMs, history.segments, bucketMs);
    const tier = history.tier || '—';
    this.columns = { data, count, tiers, tier, withDate: spansDays(startMs, endMs) };

    // Summary: current, range mean (count-weighted), min, max, tier.
    let sum = 0;
    let n = 0;
    let lo = Infinity;
    let hi = -Infinity;
    for (const p of points) {
      const c = p.count ?? 1;
      sum += p.value * c;
      n += c;
      lo = Math.min(lo, p.min ?? p.value);
      hi = Math.max(hi, p.max ?? p.value);
    }
    const last = points[points.length - 1];
    const items = [
      ['Current', last ? formatValue(metric, last.value) : '—', last ? formatRelative(last.timestamp, now) : ''],
      ['Mean', n ? formatValue(metric, sum / n) : '—', ''],
      ['Min', n ? formatValue(metric, lo) : '—', ''],
      ['Max', n ? formatValue(metric, hi) : '—', ''],
      ['Tier', tier, `${formatCount(points.length)} points${gaps ? `, ${gaps} gap${gaps > 1 ? 's' : ''}` : ''}`],
    ];
    this.summaryEl.replaceChildren(
      ...items.map(([k, v, sub]) => {
        const d = document.createElement('div');
        d.className = 'stat';
        d.innerHTML = '<span class="k"></span><span class="v"></span><span class="s"></span>';
        d.children[0].textContent = k;
        d.children[1].textContent = v;
        d.children[2].textContent = sub;
        d.dataset.stat = k.toLowerCase();
        return d;
      }),
    );

    this.chartEl.dataset.points = String(points.length);
    this.chartEl.dataset.gaps = String(gaps);
    this.chartEl.dataset.tier = tier;
    this.chartEl.dataset.band = String(points.filter((p) => (p.max ?? p.value) > (p.min ?? p.value)).length);
    if (!points.length) {
      this.destroyPlot();
      const empty = document.createElement('div');
      empty.className = 'chart-empty';
      empty.textContent = `No ${metricLabel(metric)} data between ${formatDateTime(startMs)} and ${formatDateTime(endMs)}.`;
      this.chartEl.replaceChildren(empty);
      this.chartEl.dataset.state = 'empty';
      return;
    }
    this.chartEl.dataset.state = 'ready';

    if (this.plot && this.plot._metric === metric) {
      this.plot.setData(data, true);
      return;
    }
    this.destroyPlot();
    this.chartEl.replaceChildren();
    this.plot = new uPlot(this.options(metric, width), data, this.chartEl);
    this.plot._metric = metric;
    this.chartEl._plot = this.plot;
  }

  options(metric, width) {
    const accent = cssVar('--accent', '#60a5fa');
    const text = cssVar('--text-dim', '#9aa4b2');
    const grid = cssVar('--grid', 'rgba(255,255,255,0.07)');
    const kind = metricKind(metric);
    const thresholds = THRESHOLDS[metric];
    const self = this;
    const tooltip = document.createElement('div');
    tooltip.className = 'chart-tip';
    tooltip.hidden = true;
    const fmt = (v) => formatValue(metric, v);
    const axisFont = `11px ${cssVar('--font', 'system-ui, sans-serif')}`;
    return {
      width,
      height: this.chartHeight(),
      legend: { show: false },
      padding: [12, 12, 0, 4],
      cursor: {
        y: false,
        drag: { x: true, y: false, setScale: true },
        points: { size: 8 },
      },
      scales: {
        x: { time: true },
        y: {
          range: (u, dmin, dmax) => {
            if (kind === 'percent') return [0, Math.max(100, Math.ceil((dmax ?? 0) / 10) * 10)];
            const top = dmax > 0 ? dmax * 1.1 : 1;
            return [0, top];
          },
        },
      },
      axes: [
        {
          stroke: text,
          grid: { stroke: grid, width: 1 },
          ticks: { stroke: grid, width: 1 },
          font: axisFont,
          // Labels with a date need more room between ticks.
          space: (u, i, min, max) => (max - min > 4 * 86_400 ? 70 : spansDays(min * 1000, max * 1000) ? 110 : 60),
          // The browser's locale, with dates when the view spans days.
          values: (u, splits) => {
            const labels = timeAxisLabels(splits, (u.scales.x.max - u.scales.x.min) * 1000);
            // uPlot draws the labels on the canvas: kept readable for tests.
            self.chartEl.dataset.xTicks = labels.join(' | ');
            return labels;
          },
        },
        {
          stroke: text,
          grid: { stroke: grid, width: 1 },
          ticks: { show: false },
          font: axisFont,
          size: kind === 'rate' ? 76 : 52,
          values: (u, vals) => vals.map((v) => (kind === 'percent' ? formatPercent(v, 0) : fmt(v))),
        },
      ],
      series: [
        {},
        { label: 'Mean', class: 'mean', stroke: accent, width: 1.75, spanGaps: false, points: { show: false } },
        { label: 'Min', class: 'band-edge', stroke: 'transparent', width: 0, spanGaps: false, points: { show: false } },
        { label: 'Max', class: 'band-edge', stroke: 'transparent', width: 0, spanGaps: false, points: { show: false } },
      ],
      bands: [{ series: [3, 2], fill: withAlpha(accent, 0.26) }],
      hooks: {
        init: [
          (u) => {
            u.over.append(tooltip);
            u.over.addEventListener('mouseleave', () => {
              tooltip.hidden = true;
            });
            u.over.addEventListener('dblclick', () => {
              self.zoomed = false;
            });
          },
        ],
        setSelect: [
          (u) => {
            if (u.select.width > 0) self.zoomed = true;
          },
        ],
        draw: [
          (u) => {
            if (!thresholds) return;
            const c = u.ctx;
            c.save();
            c.setLineDash([4, 4]);
            c.lineWidth = Math.max(1, devicePixelRatio);
            [
              [thresholds[0], cssVar('--warn', '#eab308')],
              [thresholds[1], cssVar('--crit', '#ef4444')],
            ].forEach(([v, colour]) => {
              const y = Math.round(u.valToPos(v, 'y', true)) + 0.5;
              c.strokeStyle = withAlpha(colour, 0.55);
              c.beginPath();
              c.moveTo(u.bbox.left, y);
              c.lineTo(u.bbox.left + u.bbox.width, y);
              c.stroke();
            });
            c.restore();
          },
        ],
        setCursor: [
          (u) => {
            const i = u.cursor.idx;
            const cols = self.columns;
            if (i == null || !cols || cols.data[1][i] == null) {
              tooltip.hidden = true;
              return;
            }
            const [xs, mean, mins, maxs] = cols.data;
            tooltip.innerHTML = '';
            const time = document.createElement('div');
            time.className = 'tip-time';
            time.textContent = cols.withDate ? formatDateTime(xs[i] * 1000) : formatPointTime(xs[i] * 1000);
            tooltip.append(time);
            for (const [k, v] of [
              ['Mean', fmt(mean[i])],
              ['Min', fmt(mins[i])],
              ['Max', fmt(maxs[i])],
              ['Count', formatCount(cols.count[i])],
              ['Tier', cols.tiers[i] || cols.tier],
            ]) {
              const row = document.createElement('div');
              row.className = 'tip-row';
              row.dataset.k = k.toLowerCase();
              row.innerHTML = '<span></span><b></b>';
              row.firstChild.textContent = k;
              row.lastChild.textContent = v;
              tooltip.append(row);
            }
            tooltip.hidden = false;
            const left = u.cursor.left;
            const top = u.cursor.top;
            const tw = tooltip.offsetWidth;
            const th = tooltip.offsetHeight;
            const x = left + 14 + tw > u.over.clientWidth ? left - tw - 14 : left + 14;
            const y = Math.min(Math.max(0, top - th / 2), u.over.clientHeight - th);
            tooltip.style.transform = `translate(${x}px, ${y}px)`;
          },
        ],
      },
    };
  }

  destroyPlot() {
    this.chartEl._plot = null;
    if (this.plot) {
      this.plot.destroy();
      this.plot = null;
    }
  }
}
