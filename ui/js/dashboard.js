// The dashboard: every resource grouped by type, one row each, with current
// values and one sparkline (Trends) or bar (Bars) per metric. One
// /api/charts request per refresh, whatever the number of rows.

import { api, withQuery } from './api.js';
import {
  compareIds,
  compareMetrics,
  formatCount,
  formatDateTime,
  formatPointTime,
  formatRelative,
  formatValue,
  level,
  metricKind,
  metricLabel,
  resourceLabel,
  searchText,
  spansDays,
  toDateTimeLocal,
} from './format.js';
import { SPARK_HEIGHT, SPARK_WIDTH, applySegments, drawSparkline, pointAt, typicalStep } from './sparkline.js';
import { rangeBounds, rangeParams, rangeSeconds, refreshPeriod } from './state.js';

const $ = (sel, root = document) => root.querySelector(sel);

/** Points per sparkline: one per CSS pixel of its width on wide screens. */
export const SPARK_POINTS = SPARK_WIDTH;
/** Sparkline width on phones (CSS px), where three metrics share 390 px. */
export const PHONE_SPARK_WIDTH = 64;
const phone = matchMedia('(max-width: 720px)');

/**
 * Incremental refresh: a live range asks only for the buckets from about a
 * minute before its last answer on (points reach the store up to a flush
 * interval after their time), on the grid of its last full answer, and
 * merges them in. A full answer is asked for again every few minutes, on a
 * range change, and after late points were folded.
 */
const LOOKBACK_MS = 60_000;
const FULL_EVERY_MS = 10 * 60_000;
/** Retry period after a failed refresh, and while waiting for a first sample. */
const RETRY_MS = 5_000;
const FIRST_SAMPLE_POLL_MS = 2_000;
/** While late points wait to be folded (the service does it within seconds). */
const LATE_POLL_MS = 3_000;
/** A resource whose newest point is older than this (at least) is shown as stopped. */
const STALE_MS = 120_000;

const GROUP_TITLES = {
  node: 'Nodes',
  vm: 'Virtual machines',
  container: 'Containers',
  storage: 'Storage',
  dockerHost: 'Docker hosts',
  dockerContainer: 'Docker containers',
};
const GROUP_ORDER = ['node', 'vm', 'container', 'storage', 'dockerHost', 'dockerContainer'];

/** Every series map of a /api/charts answer: [map object, resource type of its entries or null (by guestTypes)]. */
function seriesMaps(charts) {
  const maps = [
    [charts.data, null],
    [charts.nodeData, 'node'],
    [charts.storageData, 'storage'],
    [charts.dockerHostData, 'dockerHost'],
    [charts.dockerData, 'dockerContainer'],
  ];
  for (const [type, resources] of Object.entries(charts.resources || {})) maps.push([resources, type]);
  return maps.filter(([m]) => m && typeof m === 'object');
}

/**
 * Merges an incremental answer (`inc`, from `cut` on) into `charts`:
 * each series' points from `cut` on are replaced, segments likewise, and
 * points older than `keepFrom` dropped.
 */
export function mergeCharts(charts, inc, cut, keepFrom) {
  const mapNames = ['data', 'nodeData', 'storageData', 'dockerHostData', 'dockerData'];
  const mergeMap = (target, source) => {
    for (const [id, metrics] of Object.entries(source || {})) {
      const t = (target[id] ??= {});
      for (const [metric, points] of Object.entries(metrics || {})) {
        const old = t[metric] || [];
        t[metric] = old.filter((p) => p.timestamp < cut && p.timestamp >= keepFrom).concat(points);
      }
    }
  };
  for (const name of mapNames) mergeMap((charts[name] ??= {}), inc[name]);
  charts.resources ??= {};
  for (const [type, resources] of Object.entries(inc.resources || {})) mergeMap((charts.resources[type] ??= {}), resources);
  Object.assign((charts.guestTypes ??= {}), inc.guestTypes || {});
  charts.meta ??= {};
  for (const [type, ids] of Object.entries(inc.meta || {})) Object.assign((charts.meta[type] ??= {}), ids);
  charts.buckets ??= {};
  for (const [type, ids] of Object.entries(inc.buckets || {})) {
    for (const [id, metrics] of Object.entries(ids || {})) {
      for (const [metric, b] of Object.entries(metrics || {})) {
        const byId = ((charts.buckets[type] ??= {})[id] ??= {});
        const old = byId[metric] || { last: null, segments: [] };
        byId[metric] = {
          last: b.last ?? old.last,
          segments: (old.segments || []).filter((s) => s.start < cut).concat(b.segments || []),
        };
      }
    }
  }
  charts.timestamp = inc.timestamp;
  charts.stats = { ...charts.stats, oldestDataTimestamp: inc.stats?.oldestDataTimestamp, lateCount: inc.stats?.lateCount };
  let count = 0;
  for (const [map] of seriesMaps(charts)) for (const metrics of Object.values(map)) for (const p of Object.values(metrics)) count += p.length;
  charts.stats.pointCount = count;
  return charts;
}

/**
 * Turns a /api/charts answer into groups of rows:
 * [{type, title, metrics, rows:[{type,id,series,buckets,meta,label}]}], where
 * `label` is what the row shows ({name, context}) and `meta` what is known
 * about the resource (its name, node, tags).
 */
export function groupsFromCharts(charts) {
  const byType = new Map();
  const buckets = charts.buckets || {};
  const metaOf = charts.meta || {};
  const add = (type, id, series) => {
    if (!series || typeof series !== 'object') return;
    if (!byType.has(type)) byType.set(type, []);
    const b = buckets[type]?.[id] || {};
    for (const [metric, points] of Object.entries(series)) applySegments(points, b[metric]?.segments);
    const meta = metaOf[type]?.[id];
    byType.get(type).push({ type, id, series, buckets: b, meta, label: resourceLabel(type, id, meta) });
  };
  const guestTypes = charts.guestTypes || {};
  for (const [id, series] of Object.entries(charts.data || {})) add(guestTypes[id] === 'container' ? 'container' : 'vm', id, series);
  for (const [id, series] of Object.entries(charts.nodeData || {})) add('node', id, series);
  for (const [id, series] of Object.entries(charts.storageData || {})) add('storage', id, series);
  for (const [id, series] of Object.entries(charts.dockerHostData || {})) add('dockerHost', id, series);
  for (const [id, series] of Object.entries(charts.dockerData || {})) add('dockerContainer', id, series);
  for (const [type, resources] of Object.entries(charts.resources || {})) {
    for (const [id, series] of Object.entries(resources || {})) add(type, id, series);
  }
  const types = [...byType.keys()].sort((a, b) => {
    const ia = GROUP_ORDER.indexOf(a);
    const ib = GROUP_ORDER.indexOf(b);
    return (ia === -1 ? 99 : ia) - (ib === -1 ? 99 : ib) || a.localeCompare(b);
  });
  return types.map((type) => {
    const rows = byType.get(type);
    const metrics = new Set();
    for (const r of rows) for (const m of Object.keys(r.series)) metrics.add(m);
    return {
      type,
      title: GROUP_TITLES[type] ?? `Other: ${type}`,
      metrics: [...metrics].sort(compareMetrics),
      rows,
    };
  });
}

/** Rows in the order people look for them: by the name shown, then by id. */
function byName(a, b) {
  return compareIds(a.label.name, b.label.name) || compareIds(a.id, b.id);
}

function lastPoint(points) {
  return points && points.length ? points[points.length - 1] : null;
}

/** Whether a row has any point in the range. */
function hasData(row) {
  return Object.values(row.series).some((p) => p && p.length);
}

export class Dashboard {
  constructor(ctx) {
    this.ctx = ctx;
    this.el = $('#page-dashboard');
    this.groupsEl = $('#groups');
    this.noticeEl = $('#notice');
    this.tooltip = $('#tooltip');
    this.visible = false;
    this.timer = null;
    this.seq = 0;
    this.charts = null;
    this.grid = null;
    this.failedSince = 0;
    this.groupEls = new Map();
    this.filter = '';
    this.sort = new Map(); // group type -> {metric, dir}
    this.pending = new Set();
    this.visibleCanvases = new Set();
    this.observer =
      'IntersectionObserver' in window
        ? new IntersectionObserver((entries) => this.onIntersect(entries), { rootMargin: '200px 0px' })
        : null;
    this.bindToolbar();
    this.bindTable();
    document.addEventListener('visibilitychange', () => {
      if (!this.visible) return;
      if (document.hidden) this.stopTimer();
      else this.refresh();
    });
    // Phones draw narrower sparklines: redraw when the layout switches.
    phone.addEventListener?.('change', () => {
      if (this.charts && this.visible) this.render();
    });
    window.addEventListener('resize', () => this.fitTables(), { passive: true });
  }

  // --- toolbar ----------------------------------------------------------------

  bindToolbar() {
    for (const b of this.el.querySelectorAll('[data-view]')) {
      b.addEventListener('click', () => this.ctx.setState({ view: b.dataset.view }));
    }
    const form = $('#custom-range');
    for (const b of this.el.querySelectorAll('[data-range]')) {
      b.addEventListener('click', () => {
        if (b.dataset.range === 'custom') {
          const [start, end] = rangeBounds(this.ctx.state);
          form.start.value = toDateTimeLocal(start);
          form.end.value = toDateTimeLocal(end);
          form.hidden = false;
          this.syncToolbar(true);
          form.start.focus();
          return;
        }
        form.hidden = true;
        this.ctx.setState({ range: b.dataset.range, start: null, end: null, autoRange: false });
      });
    }
    form.addEventListener('submit', (e) => {
      e.preventDefault();
      const start = new Date(form.start.value).getTime();
      const end = new Date(form.end.value).getTime();
      if (!(start < end)) {
        this.ctx.banner.show(new Error('The custom range must end after it starts.'), 'range');
        return;
      }
      this.ctx.banner.clear('range');
      this.ctx.setState({ range: 'custom', start, end, autoRange: false });
    });
    $('#refresh').addEventListener('click', () => this.refresh({ full: true }));
    $('#filter').addEventListener('input', (e) => {
      this.filter = e.target.value.trim();
      this.applyFilter();
    });
  }

  syncToolbar(customOpen = false) {
    const { state } = this.ctx;
    for (const b of this.el.querySelectorAll('[data-view]')) b.setAttribute('aria-pressed', String(b.dataset.view === state.view));
    for (const b of this.el.querySelectorAll('[data-range]')) {
      const on = customOpen ? b.dataset.range === 'custom' : b.dataset.range === state.range;
      b.setAttribute('aria-pressed', String(on));
    }
    const form = $('#custom-range');
    if (state.range === 'custom' && !customOpen) {
      form.hidden = false;
      form.start.value = toDateTimeLocal(state.start);
      form.end.value = toDateTimeLocal(state.end);
    } else if (!customOpen) {
      form.hidden = true;
    }
    this.el.dataset.view = state.view;
  }

  // --- lifecycle ------------------------------------------------------------------

  show() {
    const key = `${this.ctx.state.range}|${this.ctx.state.start}|${this.ctx.state.end}`;
    const viewChanged = this.renderedView !== this.ctx.state.view;
    this.visible = true;
    this.el.hidden = false;
    this.syncToolbar();
    if (key !== this.key || !this.charts) {
      // A new range: the old sparklines stay, dimmed, until it answers.
      if (this.charts) this.groupsEl.classList.add('switching');
      this.key = key;
      this.grid = null;
      this.refresh({ full: true });
    } else {
      if (viewChanged && this.charts) this.render();
      if (!this.timer) this.schedule();
    }
  }

  hide() {
    this.visible = false;
    this.stopTimer();
    this.hideTooltip();
  }

  stopTimer() {
    clearTimeout(this.timer);
    this.timer = null;
  }

  /** The next refresh: sooner while something is expected (a first sample, late points, a retry). */
  schedule(full = false) {
    this.stopTimer();
    if (!this.visible || document.hidden) return;
    const stats = this.charts?.stats || {};
    let period = refreshPeriod(this.ctx.state);
    if (this.failedSince) period = period ? Math.min(period, RETRY_MS) : RETRY_MS;
    else if (this.charts && !stats.oldestDataTimestamp) period = FIRST_SAMPLE_POLL_MS;
    else if (stats.lateCount > 0) {
      period = LATE_POLL_MS;
      full = true;
    }
    if (period) this.timer = setTimeout(() => this.refresh({ full }), period);
  }

  /** The request for this refresh: the whole range, or only its newest buckets. */
  request(full) {
    const { state } = this.ctx;
    const g = this.grid;
    const live = state.range !== 'custom' && refreshPeriod(state) > 0;
    if (!full && live && g && this.charts && Date.now() - g.fullAt < FULL_EVERY_MS) {
      const serverNow = g.serverAt + (Date.now() - g.clientAt);
      const from = Math.max(g.start0, g.serverAt - LOOKBACK_MS);
      const start = g.start0 + Math.floor((from - g.start0) / g.width) * g.width;
      const n = Math.max(1, Math.ceil((serverNow - start) / g.width) + 1);
      const path = withQuery('/api/charts', { start, end: start + n * g.width, maxPoints: n });
      return { path, cut: start };
    }
    return { path: withQuery('/api/charts', { ...rangeParams(state), maxPoints: SPARK_POINTS }), cut: null };
  }

  async refresh({ full = false } = {}) {
    this.stopTimer();
    const { state } = this.ctx;
    const seq = ++this.seq;
    const req = this.request(full);
    // While failing, the status keeps saying so (red) until an answer comes.
    if (!this.failedSince) this.ctx.status.set('Loading…', { busy: true });
    this.groupsEl.setAttribute('aria-busy', 'true');
    try {
      const answer = await api.get(req.path);
      if (seq !== this.seq) return;
      const waited = this.charts?.stats?.lateCount > 0;
      if (req.cut == null) {
        this.charts = answer;
        const rangeMs = (rangeSeconds(state.range) || 0) * 1000;
        this.grid = rangeMs
          ? {
              start0: answer.timestamp - rangeMs,
              width: Math.ceil(rangeMs / SPARK_POINTS),
              rangeMs,
              serverAt: answer.timestamp,
              clientAt: Date.now(),
              fullAt: Date.now(),
            }
          : null;
      } else {
        const g = this.grid;
        mergeCharts(this.charts, answer, req.cut, answer.timestamp - g.rangeMs - g.width);
        g.serverAt = answer.timestamp;
        g.clientAt = Date.now();
      }
      this.failedSince = 0;
      this.ctx.banner.clear('dashboard');
      if (this.autoRange()) return;
      this.render();
      this.ctx.detail.refreshIfOpen();
      // Late points were folded since the last answer: older buckets changed.
      if (waited && !(this.charts.stats?.lateCount > 0) && req.cut != null) {
        this.refresh({ full: true });
        return;
      }
    } catch (e) {
      if (seq !== this.seq) return;
      this.failedSince ||= Date.now();
      this.ctx.banner.show(e, 'dashboard');
      this.ctx.status.set(`Update failed since ${formatPointTime(this.failedSince)}: ${e.message}. Retrying every ${RETRY_MS / 1000} s.`, {
        error: true,
      });
      if (!this.charts) this.groupsEl.replaceChildren(emptyState('Could not load the dashboard', 'See the error above. The page retries by itself.'));
    } finally {
      if (seq === this.seq) {
        this.groupsEl.setAttribute('aria-busy', 'false');
        this.groupsEl.classList.remove('switching');
        this.schedule();
      }
    }
  }

  /**
   * A first visit with no range chosen opens on one that fits the history:
   * 15m while it is younger than an hour, else 1h. True when it switched
   * (and asked again).
   */
  autoRange() {
    const { state } = this.ctx;
    if (!state.autoRange) return false;
    const stats = this.charts.stats || {};
    const oldest = stats.oldestDataTimestamp || 0;
    const now = this.charts.timestamp || Date.now();
    const fits = oldest && now - oldest < 3600_000 ? '15m' : '1h';
    if (fits === state.range) return false;
    this.ctx.setState({ range: fits, autoRange: true });
    return true;
  }

  // --- rendering ----------------------------------------------------------------------

  render() {
    const t0 = performance.now();
    this.renderBody();
    // Exposed for the browser tests' performance check (and curious people).
    this.groupsEl.dataset.renderMs = (performance.now() - t0).toFixed(1);
  }

  renderBody() {
    const { state } = this.ctx;
    const charts = this.charts;
    const now = charts.timestamp || Date.now();
    const [start, end] = rangeBounds(state, now);
    this.bounds = [start, end];
    this.withDate = spansDays(start, end);
    this.sparkWidth = phone.matches ? PHONE_SPARK_WIDTH : SPARK_WIDTH;
    const groups = groupsFromCharts(charts);
    this.groups = groups;
    const stats = charts.stats || {};
    const rowsWithData = groups.reduce((n, g) => n + g.rows.filter(hasData).length, 0);
    const pointCount = stats.pointCount ?? null;

    // Status line.
    const period = refreshPeriod(state, now);
    const parts = [`Updated ${formatPointTime(now)}`];
    if (stats.tier) parts.push(`${stats.tier} tier`);
    if (pointCount != null) parts.push(`${formatCount(pointCount)} points`);
    parts.push(period ? `auto-refresh ${period / 1000} s` : 'auto-refresh off');
    this.ctx.status.set(parts.join(' · '));

    // Notices: late points being folded; a range reaching before the first data.
    const oldest = stats.oldestDataTimestamp || 0;
    const rangeName = state.range === 'custom' ? 'chosen' : state.range;
    const step = (end - start) / SPARK_POINTS;
    const notices = [];
    if (stats.lateCount > 0) {
      notices.push(
        `${formatCount(stats.lateCount)} points written late (older than the raw retention) are being folded into the history: ranges beyond the raw tier fill in within seconds.`,
      );
    }
    if (oldest && start < oldest - Math.max(step, 60_000) && rowsWithData) {
      notices.push(`Collecting history since ${formatDateTime(oldest)} (${formatRelative(oldest, now)}): the ${rangeName} range reaches before the first data.`);
    }
    this.noticeEl.hidden = !notices.length;
    this.noticeEl.textContent = notices.join(' ');
    this.noticeEl.dataset.late = String(stats.lateCount > 0);

    if (!rowsWithData) {
      this.clearGroups();
      let title;
      let text;
      if (!oldest) {
        title = 'No history yet';
        text = 'Nothing has been recorded so far. This page shows the first samples as soon as they arrive (the host collector takes one at start).';
      } else if (oldest > end) {
        title = `Collecting history since ${formatDateTime(oldest)}`;
        text = `The ${rangeName} range ends before the first data (${formatRelative(oldest, now)}). Pick a later or longer range.`;
      } else {
        title = 'No data in this range';
        text = `History goes back to ${formatDateTime(oldest)} (${formatRelative(oldest, now)}), but nothing was recorded between ${formatDateTime(start)} and ${formatDateTime(end)}.`;
      }
      this.groupsEl.replaceChildren(emptyState(title, text));
      this.groupsEl.dataset.state = 'empty';
      return;
    }
    this.groupsEl.dataset.state = 'data';
    this.groupsEl.querySelector(':scope > .empty, :scope > .loading')?.remove();

    const seen = new Set();
    let previous = null;
    for (const group of groups) {
      seen.add(group.type);
      const el = this.renderGroup(group);
      if (previous ? previous.nextSibling !== el : this.groupsEl.firstChild !== el) {
        if (previous) previous.after(el);
        else this.groupsEl.prepend(el);
      }
      previous = el;
    }
    for (const [type, g] of this.groupEls) {
      if (!seen.has(type)) {
        this.forgetCanvases(g.el);
        g.el.remove();
        this.groupEls.delete(type);
      }
    }
    this.renderedView = state.view;
    this.applyFilter();
    this.fitTables();
    this.flushVisible();
  }

  /**
   * A table wider than the page scrolls sideways inside its box (focusable,
   * so keyboards can scroll it too); the others stay unclipped so their
   * headers can stick under the top bar on wide screens.
   */
  fitTables() {
    for (const g of this.groupEls.values()) {
      const wrap = g.el.querySelector('.table-wrap');
      const scrolls = wrap.scrollWidth > wrap.clientWidth + 1 || wrap.firstChild.offsetWidth > wrap.clientWidth + 1;
      wrap.classList.toggle('scrolls', scrolls);
      if (scrolls) {
        wrap.tabIndex = 0;
        wrap.setAttribute('role', 'region');
        wrap.setAttribute('aria-label', `${g.el.querySelector('h2 .title').textContent} (scrolls sideways)`);
      } else {
        wrap.removeAttribute('tabindex');
        wrap.removeAttribute('role');
        wrap.removeAttribute('aria-label');
      }
    }
  }

  clearGroups() {
    for (const g of this.groupEls.values()) this.forgetCanvases(g.el);
    this.groupEls.clear();
  }

  renderGroup(group) {
    const view = this.ctx.state.view;
    const signature = `${view}|${this.sparkWidth}|${group.metrics.join(',')}`;
    let g = this.groupEls.get(group.type);
    if (!g || g.signature !== signature) {
      if (g) {
        this.forgetCanvases(g.el);
        g.el.remove();
      }
      g = this.buildGroup(group, signature);
      this.groupEls.set(group.type, g);
    }
    g.el.querySelector('.count').textContent = formatCount(group.rows.length);

    // Rows, keyed by id, in the current sort order.
    const rows = [...group.rows];
    const sort = this.sort.get(group.type);
    if (sort && sort.metric) {
      const value = (r) => lastPoint(r.series[sort.metric])?.value ?? -Infinity;
      rows.sort((a, b) => (value(b) - value(a)) * sort.dir || byName(a, b));
    } else {
      rows.sort((a, b) => byName(a, b) * (sort?.dir ?? 1));
    }
    const keep = new Set();
    let previous = null;
    for (const row of rows) {
      keep.add(row.id);
      let tr = g.rows.get(row.id);
      if (!tr) {
        tr = this.buildRow(group, row);
        g.rows.set(row.id, tr);
      }
      if (previous ? previous.nextSibling !== tr : g.tbody.firstChild !== tr) {
        if (previous) previous.after(tr);
        else g.tbody.prepend(tr);
      }
      previous = tr;
      this.updateRow(group, row, tr);
    }
    for (const [id, tr] of g.rows) {
      if (!keep.has(id)) {
        this.forgetCanvases(tr);
        tr.remove();
        g.rows.delete(id);
      }
    }
    for (const th of g.el.querySelectorAll('thead th[data-sort]')) {
      const key = th.dataset.sort;
      const on = sort ? (sort.metric || '') === key : key === '';
      th.setAttribute('aria-sort', on ? ((sort?.dir ?? 1) > 0 === (key === '') ? 'ascending' : 'descending') : 'none');
    }
    return g.el;
  }

  buildGroup(group, signature) {
    const el = document.createElement('section');
    el.className = 'group';
    el.dataset.group = group.type;
    const h = document.createElement('h2');
    h.innerHTML = '<span class="title"></span> <span class="count"></span>';
    h.querySelector('.title').textContent = group.title;
    const wrap = document.createElement('div');
    wrap.className = 'table-wrap';
    const table = document.createElement('table');
    table.className = 'res';
    const head = document.createElement('thead');
    const hr = document.createElement('tr');
    const nameTh = document.createElement('th');
    nameTh.scope = 'col';
    nameTh.className = 'name';
    nameTh.dataset.sort = '';
    nameTh.innerHTML = '<button type="button" class="sort">Name</button>';
    hr.append(nameTh);
    for (const m of group.metrics) {
      const th = document.createElement('th');
      th.scope = 'col';
      th.dataset.sort = m;
      th.dataset.metric = m;
      th.className = `m kind-${metricKind(m)}`;
      const b = document.createElement('button');
      b.type = 'button';
      b.className = 'sort';
      b.textContent = metricLabel(m);
      th.append(b);
      hr.append(th);
    }
    head.append(hr);
    const tbody = document.createElement('tbody');
    table.append(head, tbody);
    wrap.append(table);
    el.append(h, wrap);
    head.addEventListener('click', (e) => {
      const th = e.target.closest('th[data-sort]');
      if (!th) return;
      const metric = th.dataset.sort;
      const cur = this.sort.get(group.type);
      const same = cur ? (cur.metric || '') === metric : metric === '';
      this.sort.set(group.type, { metric, dir: same ? -(cur?.dir ?? 1) : 1 });
      this.render();
    });
    return { el, tbody, rows: new Map(), signature, metrics: group.metrics };
  }

  buildRow(group, row) {
    const tr = document.createElement('tr');
    tr.dataset.id = row.id;
    tr.dataset.type = row.type;
    const th = document.createElement('th');
    th.scope = 'row';
    th.className = 'name';
    th.innerHTML = '<span class="rname"></span><span class="rctx"></span>';
    tr.append(th);
    const view = this.ctx.state.view;
    for (const m of group.metrics) {
      const td = document.createElement('td');
      td.className = `m kind-${metricKind(m)}`;
      td.dataset.metric = m;
      const b = document.createElement('button');
      b.type = 'button';
      b.className = 'cell';
      b.dataset.metric = m;
      if (view === 'trends') {
        const c = document.createElement('canvas');
        c.className = 'spark';
        c.width = this.sparkWidth;
        c.height = SPARK_HEIGHT;
        c.dataset.metric = m;
        c.setAttribute('aria-hidden', 'true');
        b.append(c);
        this.observer?.observe(c);
      } else if (metricKind(m) === 'percent') {
        const bar = document.createElement('span');
        bar.className = 'bar';
        bar.innerHTML = '<span class="fill"></span>';
        b.append(bar);
      }
      const v = document.createElement('span');
      v.className = 'val';
      b.append(v);
      td.append(b);
      tr.append(td);
    }
    return tr;
  }

  /**
   * Stopped: the newest point of the series (its real time, not its
   * bucket's) is older than 2 minutes, or three of its collector's usual
   * intervals when that is longer. The same at every range.
   */
  staleAfter(points, bucket) {
    const raw = points.filter((p) => p.tier === 'raw' && p.w <= 1000).slice(-6);
    return Math.max(STALE_MS, typicalStep(raw) * 3);
  }

  updateRow(group, row, tr) {
    // The name (and node) may change between answers: a guest migrates.
    const th = tr.firstChild;
    const { name, context } = row.label;
    if (th.firstChild.textContent !== name) th.firstChild.textContent = name;
    if (th.lastChild.textContent !== context) th.lastChild.textContent = context;
    const tags = row.meta?.tags?.length ? ` · ${row.meta.tags.join(', ')}` : '';
    th.title = `${row.id}${tags}`;
    tr.dataset.search = searchText(row.id, row.meta);
    const [start, end] = this.bounds;
    const now = this.charts.timestamp || Date.now();
    const segmented = !!this.charts.buckets;
    let stopped = 0;
    let i = 1;
    for (const m of group.metrics) {
      const td = tr.children[i++];
      const b = td.firstChild;
      const points = row.series[m] || [];
      const last = lastPoint(points);
      const bucket = row.buckets?.[m];
      const newest = bucket?.last ?? last?.timestamp ?? null;
      const v = b.querySelector('.val');
      const lvl = last ? level(m, last.value) : 'none';
      const stale = newest == null || now - newest > this.staleAfter(points, bucket);
      if (stale) stopped++;
      v.textContent = last ? formatValue(m, last.value) : '—';
      td.className = `m kind-${metricKind(m)} lvl-${lvl}${stale ? ' stale' : ''}`;
      const who = row.meta?.name ? `${row.meta.name} (${row.id})` : row.id;
      const label = `${metricLabel(m)} of ${who}: ${last ? formatValue(m, last.value) : 'no data'}${
        newest != null && stale ? `, last seen ${formatRelative(newest, now)}` : ''
      }. Open chart.`;
      b.setAttribute('aria-label', label);
      const canvas = b.querySelector('canvas');
      if (canvas) {
        // The answer's bucket as the spacing floor only when it has no
        // segments (an older service).
        const step = segmented ? 0 : (end - start) / SPARK_POINTS;
        canvas._pending = { points, opts: { start, end, metric: m, step, width: this.sparkWidth } };
        this.pending.add(canvas);
      }
      const fill = b.querySelector('.fill');
      if (fill) fill.style.width = `${last ? Math.max(0, Math.min(100, last.value)) : 0}%`;
    }
    tr.classList.toggle('stopped', stopped === group.metrics.length);
  }

  // --- lazy sparkline drawing -------------------------------------------------------

  onIntersect(entries) {
    for (const e of entries) {
      if (e.isIntersecting) this.visibleCanvases.add(e.target);
      else this.visibleCanvases.delete(e.target);
    }
    this.flushVisible();
  }

  flushVisible() {
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = 0;
      const t0 = performance.now();
      const list = this.observer ? [...this.visibleCanvases] : [...this.pending];
      let drawn = 0;
      for (const c of list) {
        const job = c._pending;
        if (!job || !this.pending.has(c)) continue;
        this.pending.delete(c);
        c._pending = null;
        drawSparkline(c, job.points, job.opts);
        drawn++;
      }
      if (drawn) {
        this.groupsEl.dataset.drawMs = (performance.now() - t0).toFixed(1);
        this.groupsEl.dataset.drawCount = String(drawn);
      }
    });
  }

  forgetCanvases(root) {
    for (const c of root.querySelectorAll('canvas.spark')) {
      this.observer?.unobserve(c);
      this.visibleCanvases.delete(c);
      this.pending.delete(c);
    }
  }

  applyFilter() {
    const f = this.filter.toLowerCase();
    let total = 0;
    for (const g of this.groupEls.values()) {
      let shown = 0;
      for (const [id, tr] of g.rows) {
        const hide = !!f && !(tr.dataset.search ?? id.toLowerCase()).includes(f);
        tr.hidden = hide;
        if (!hide) shown++;
      }
      g.el.hidden = shown === 0;
      total += shown;
    }
    let none = this.groupsEl.querySelector(':scope > .no-match');
    if (f && !total && this.groupEls.size) {
      if (!none) {
        none = emptyState('', '');
        none.classList.add('no-match');
        this.groupsEl.append(none);
      }
      none.querySelector('h2').textContent = `No resource matches “${this.filter}”`;
      none.querySelector('p').textContent = 'The filter matches names, ids, nodes and tags (for example web01, pve1:101, pve-a or prod). Clear it to see every resource.';
    } else {
      none?.remove();
    }
  }

  // --- interaction: tooltip and detail -------------------------------------------

  bindTable() {
    this.groupsEl.addEventListener('click', (e) => {
      const cell = e.target.closest('button.cell');
      if (!cell) return;
      const tr = cell.closest('tr');
      const group = this.groups?.find((g) => g.type === tr.dataset.type);
      const row = group?.rows.find((r) => r.id === tr.dataset.id);
      const metrics = row ? Object.keys(row.series).sort(compareMetrics) : [cell.dataset.metric];
      this.hideTooltip();
      this.ctx.detail.open({ type: tr.dataset.type, id: tr.dataset.id, metric: cell.dataset.metric, metrics, meta: row?.meta });
    });
    this.groupsEl.addEventListener('pointermove', (e) => {
      const canvas = e.target.closest?.('canvas.spark');
      if (!canvas || !canvas._spark) return this.hideTooltip();
      const rect = canvas.getBoundingClientRect();
      const p = pointAt(canvas, e.clientX - rect.left);
      if (!p) return this.hideTooltip();
      const m = canvas._spark.metric;
      this.tooltip.innerHTML = '<span class="t"></span> <b></b>';
      this.tooltip.firstChild.textContent = formatPointTime(p.timestamp, this.withDate);
      this.tooltip.lastChild.textContent = formatValue(m, p.value);
      this.tooltip.hidden = false;
      const tw = this.tooltip.offsetWidth;
      const x = Math.min(window.innerWidth - tw - 8, Math.max(8, e.clientX - tw / 2));
      this.tooltip.style.transform = `translate(${x}px, ${rect.top - 30}px)`;
    });
    this.groupsEl.addEventListener('pointerleave', () => this.hideTooltip());
    window.addEventListener('scroll', () => this.hideTooltip(), { passive: true });
  }

  hideTooltip() {
    this.tooltip.hidden = true;
  }
}

function emptyState(title, text) {
  const el = document.createElement('div');
  el.className = 'empty';
  el.innerHTML = '<svg viewBox="0 0 48 24" aria-hidden="true"><path d="M2 16h9l4-9 6 14 5-10 3 5h17"/></svg><h2></h2><p></p>';
  el.querySelector('h2').textContent = title;
  el.querySelector('p').textContent = text;
  return el;
}
