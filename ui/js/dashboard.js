// The dashboard: resources grouped by type, one row each, with current
// values and one sparkline (Trends) or bar (Bars) per metric. The server
// orders, searches and pages the resources (docs/api.md, `page`): the page
// asks only for the rows around the screen, one /api/charts request per
// refresh however many resources there are, and keeps only the rows on
// screen in the DOM; the rest of each table is empty space of the right
// height, filled in as it scrolls into view.

import { api, withQuery } from './api.js';
import {
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
/**
 * The rows around the screen: the page keeps the visible rows and a few
 * more (OVERSCAN) in the DOM, and asks the server for about a screen more
 * on each side, in blocks of rows, so scrolling a little asks for nothing.
 */
const OVERSCAN = 6;
const BLOCK = 25;
/** How long typing in the filter waits before the server searches. */
const SEARCH_DEBOUNCE_MS = 250;
/** How long scrolling waits before asking for the rows it uncovered. */
const SCROLL_FETCH_MS = 80;
/** A row's height (CSS px, border included) until one is measured. */
const rowGuess = () => (phone.matches ? 41 : 31);
/** Named in the page's performance timeline when the first rows are on screen. */
export const FIRST_ROWS_MARK = 'dashboard:first-rows';

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

/** The series of one resource (by the type it is answered as) in a /api/charts answer. */
function seriesOf(charts, type, id) {
  switch (type) {
    case 'vm':
    case 'container':
      return charts.data?.[id];
    case 'node':
      return charts.nodeData?.[id];
    case 'storage':
      return charts.storageData?.[id];
    case 'dockerHost':
      return charts.dockerHostData?.[id];
    case 'dockerContainer':
      return charts.dockerData?.[id];
    default:
      return charts.resources?.[type]?.[id];
  }
}

/**
 * Merges an incremental answer (`inc`, from `cut` on) into `charts`:
 * each series' points from `cut` on are replaced, segments likewise, and
 * points older than `keepFrom` dropped. The page becomes the newer one.
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
  if (inc.page) charts.page = inc.page;
  charts.timestamp = inc.timestamp;
  charts.stats = { ...charts.stats, oldestDataTimestamp: inc.stats?.oldestDataTimestamp, lateCount: inc.stats?.lateCount };
  let count = 0;
  for (const [map] of seriesMaps(charts)) for (const metrics of Object.values(map)) for (const p of Object.values(metrics)) count += p.length;
  charts.stats.pointCount = count;
  return charts;
}

/**
 * The rows of a /api/charts answer in the order of its page (`page.items`):
 * [{type, id, index, series, buckets, meta, label}], where `index` is the
 * row's place in the whole list, `label` what the row shows ({name,
 * context}) and `meta` what is known about the resource (its name, node, tags).
 */
export function pageRows(charts) {
  const page = charts.page || { offset: 0, items: [] };
  const buckets = charts.buckets || {};
  const metaOf = charts.meta || {};
  return page.items.map(({ resourceType: type, resourceId: id }, i) => {
    const series = seriesOf(charts, type, id) || {};
    const b = buckets[type]?.[id] || {};
    for (const [metric, points] of Object.entries(series)) applySegments(points, b[metric]?.segments);
    const meta = metaOf[type]?.[id];
    return { type, id, index: page.offset + i, series, buckets: b, meta, label: resourceLabel(type, id, meta) };
  });
}

/** The groups of the whole list (`page.groups`): [{type, title, start, total, metrics}]. */
export function pageGroups(charts) {
  return (charts.page?.groups || []).map((g) => ({
    type: g.resourceType,
    title: GROUP_TITLES[g.resourceType] ?? `Other: ${g.resourceType}`,
    start: g.start,
    total: g.total,
    metrics: [...g.metrics].sort(compareMetrics),
  }));
}

function lastPoint(points) {
  return points && points.length ? points[points.length - 1] : null;
}

/** Whether a row has any point in the range. */
function hasData(row) {
  return Object.values(row.series).some((p) => p && p.length);
}

const sameItems = (a = [], b = []) => a.length === b.length && a.every((x, i) => x.resourceId === b[i].resourceId && x.resourceType === b[i].resourceType);

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
    this.sort = new Map(); // group type -> {metric, dir}
    // What the server is asked to search, and the rows of its last answer
    // by their place in the whole list.
    this.search = '';
    this.rows = new Map();
    this.layout = [];
    this.total = 0;
    this.rowH = rowGuess();
    /** The rows the screen needs ({offset, limit}), those of `charts` (with `key`), and those being fetched. */
    this.want = null;
    this.loaded = null;
    this.inflight = null;
    this.searchTimer = null;
    this.fetchTimer = null;
    this.scrollFrame = 0;
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
    // Phones draw narrower sparklines and taller rows: redraw when the layout switches.
    phone.addEventListener?.('change', () => {
      this.rowH = rowGuess();
      if (this.charts && this.visible) this.render();
    });
    window.addEventListener(
      'resize',
      () => {
        this.fitTables();
        this.onScroll();
      },
      { passive: true },
    );
    window.addEventListener('scroll', () => this.onScroll(), { passive: true });
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
    const filter = $('#filter');
    // The server searches every resource: ask once typing pauses (or at once on Enter).
    filter.addEventListener('input', () => {
      clearTimeout(this.searchTimer);
      this.searchTimer = setTimeout(() => this.setSearch(filter.value.trim()), SEARCH_DEBOUNCE_MS);
    });
    filter.addEventListener('keydown', (e) => {
      if (e.key !== 'Enter') return;
      clearTimeout(this.searchTimer);
      this.setSearch(filter.value.trim());
    });
  }

  setSearch(text) {
    if (text === this.search) return;
    this.search = text;
    this.want = null;
    if (this.visible) this.refresh({ full: true });
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

  /** The server's sort of each group (`type:key:dir`, docs/api.md), from the headers clicked. */
  sortParam() {
    const parts = [];
    for (const [type, s] of this.sort) {
      if (s.metric) parts.push(`${type}:${s.metric}:${s.dir > 0 ? 'desc' : 'asc'}`);
      else if (s.dir < 0) parts.push(`${type}:name:desc`);
    }
    return parts.join(',');
  }

  /** What decides which resources are where in the list. */
  listingKey() {
    return `${this.search}\n${this.sortParam()}`;
  }

  /** The rows of a first screen, before anything is measured. */
  firstWindow() {
    const rows = Math.ceil(window.innerHeight / this.rowH) + 2 * OVERSCAN;
    return { offset: 0, limit: Math.ceil(rows / BLOCK) * BLOCK };
  }

  /** The request for this refresh: the rows the screen needs, over the whole range or only its newest buckets. */
  request(full) {
    const { state } = this.ctx;
    const g = this.grid;
    const win = this.want || this.firstWindow();
    const key = this.listingKey();
    const listing = { offset: win.offset, limit: win.limit, search: this.search, sort: this.sortParam() };
    const l = this.loaded;
    const same = l && l.offset === win.offset && l.limit === win.limit && l.key === key;
    const live = state.range !== 'custom' && refreshPeriod(state) > 0;
    if (!full && same && live && g && this.charts && Date.now() - g.fullAt < FULL_EVERY_MS) {
      const serverNow = g.serverAt + (Date.now() - g.clientAt);
      const from = Math.max(g.start0, g.serverAt - LOOKBACK_MS);
      const start = g.start0 + Math.floor((from - g.start0) / g.width) * g.width;
      const n = Math.max(1, Math.ceil((serverNow - start) / g.width) + 1);
      const path = withQuery('/api/charts', { start, end: start + n * g.width, maxPoints: n, ...listing });
      return { path, cut: start, win, key };
    }
    return { path: withQuery('/api/charts', { ...rangeParams(state), maxPoints: SPARK_POINTS, ...listing }), cut: null, win, key };
  }

  async refresh({ full = false } = {}) {
    this.stopTimer();
    clearTimeout(this.fetchTimer);
    this.fetchTimer = null;
    const { state } = this.ctx;
    const seq = ++this.seq;
    const req = this.request(full);
    this.inflight = req.cut == null ? { ...req.win, key: req.key } : null;
    // While failing, the status keeps saying so (red) until an answer comes.
    if (!this.failedSince) this.ctx.status.set('Loading…', { busy: true });
    this.groupsEl.setAttribute('aria-busy', 'true');
    try {
      const answer = await api.get(req.path);
      if (seq !== this.seq) return;
      const waited = this.charts?.stats?.lateCount > 0;
      let moved = false;
      if (req.cut == null) {
        this.charts = answer;
        this.loaded = { ...req.win, key: req.key, search: this.search };
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
        const before = this.charts.page?.items;
        mergeCharts(this.charts, answer, req.cut, answer.timestamp - g.rangeMs - g.width);
        // Resources came, went or changed places: the page is asked for again whole.
        moved = !sameItems(before, this.charts.page?.items);
        g.serverAt = answer.timestamp;
        g.clientAt = Date.now();
      }
      this.failedSince = 0;
      this.ctx.banner.clear('dashboard');
      if (this.autoRange()) return;
      this.render();
      this.ctx.detail.refreshIfOpen();
      // Late points were folded since the last answer: older buckets changed.
      if (moved || (waited && !(this.charts.stats?.lateCount > 0) && req.cut != null)) {
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
        this.inflight = null;
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
    const rows = pageRows(charts);
    this.rows = new Map(rows.map((r) => [r.index, r]));
    this.layout = pageGroups(charts);
    this.total = charts.page?.total ?? rows.length;
    const search = this.loaded?.search ?? '';
    this.groupsEl.dataset.search = search;
    this.groupsEl.dataset.total = String(this.total);
    const stats = charts.stats || {};
    const rowsWithData = rows.filter(hasData).length;
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

    // Nothing to show: no resource matches the search, or (every resource
    // being in this answer) none has data in the range.
    const whole = (charts.page?.offset ?? 0) === 0 && rows.length >= this.total;
    if (search && !this.total) {
      this.clearGroups();
      const none = emptyState(
        `No resource matches “${search}”`,
        'The filter matches names, ids, nodes and tags (for example web01, pve1:101, pve-a or prod). Clear it to see every resource.',
      );
      none.classList.add('no-match');
      this.groupsEl.replaceChildren(none);
      this.groupsEl.dataset.state = 'no-match';
      return;
    }
    if (!this.total || (!search && whole && !rowsWithData)) {
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
    for (const group of this.layout) {
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
    this.renderRows();
    this.fitTables();
  }

  onScroll() {
    this.hideTooltip();
    if (!this.visible || !this.charts || this.scrollFrame) return;
    this.scrollFrame = requestAnimationFrame(() => {
      this.scrollFrame = 0;
      if (this.groupsEl.dataset.state === 'data') this.renderRows();
    });
  }

  /**
   * Puts in each table the rows on screen (and OVERSCAN more each side),
   * with empty space of the right height for the rest, then asks for the
   * rows the screen shows that the last answer does not hold.
   */
  renderRows(measured = false) {
    let from = Infinity;
    let to = -Infinity;
    const h = this.rowH;
    for (const group of this.layout) {
      const g = this.groupEls.get(group.type);
      if (!g) continue;
      const top = g.tbody.getBoundingClientRect().top;
      const a = Math.max(0, Math.min(group.total, Math.floor(-top / h) - OVERSCAN));
      const b = Math.max(a, Math.min(group.total, Math.ceil((window.innerHeight - top) / h) + OVERSCAN));
      this.placeRows(group, g, a, b);
      if (b > a) {
        from = Math.min(from, group.start + a);
        to = Math.max(to, group.start + b);
      }
    }
    // Rows are as tall as the CSS makes them: measured once, then kept.
    const real = this.groupsEl.querySelector('tbody tr[data-id]');
    const actual = real?.getBoundingClientRect().height;
    if (!measured && actual > 0 && Math.abs(actual - this.rowH) > 0.5) {
      this.rowH = actual;
      this.renderRows(true);
      return;
    }
    if (real && !performance.getEntriesByName(FIRST_ROWS_MARK).length) performance.mark(FIRST_ROWS_MARK);
    this.groupsEl.dataset.rows = String(this.groupsEl.querySelectorAll('tbody tr[data-index]').length);
    this.flushVisible();
    if (from < to) this.ensureLoaded(from, to);
  }

  /** Rows `a` to `b` (excluded) of a group's table, between its two spacers. */
  placeRows(group, g, a, b) {
    const h = this.rowH;
    const wanted = [];
    for (let i = a; i < b; i++) {
      const index = group.start + i;
      const row = this.rows.get(index);
      wanted.push({ i, index, row: row?.type === group.type ? row : null });
    }
    const keyOf = (w) => (w.row ? `r${w.row.id}` : `p${w.index}`);
    const keep = new Set(wanted.map(keyOf));
    for (const [key, tr] of g.rows) {
      if (!keep.has(key)) {
        this.forgetCanvases(tr);
        tr.remove();
        g.rows.delete(key);
      }
    }
    g.top.firstChild.style.height = `${a * h}px`;
    g.bottom.firstChild.style.height = `${(group.total - b) * h}px`;
    let previous = g.top;
    for (const w of wanted) {
      const key = keyOf(w);
      let tr = g.rows.get(key);
      if (!tr) {
        tr = w.row ? this.buildRow(group, w.row) : this.buildPlaceholder(group);
        g.rows.set(key, tr);
      }
      tr.dataset.index = String(w.index);
      tr.setAttribute('aria-rowindex', String(w.i + 2));
      if (w.row && tr._row !== w.row) {
        tr._row = w.row;
        this.updateRow(group, w.row, tr);
      }
      if (previous.nextSibling !== tr) previous.after(tr);
      previous = tr;
    }
    if (previous.nextSibling !== g.bottom) previous.after(g.bottom);
  }

  /**
   * Asks for the rows `from` to `to` (excluded) of the whole list unless
   * the last answer (or the request under way) holds them: about a screen
   * more each side, in blocks, once scrolling pauses.
   */
  ensureLoaded(from, to) {
    const key = this.listingKey();
    const holds = (w) => w && w.key === key && from >= w.offset && to <= Math.min(this.total, w.offset + w.limit);
    if (holds(this.inflight)) return;
    if (holds(this.loaded)) {
      this.want = { offset: this.loaded.offset, limit: this.loaded.limit };
      return;
    }
    const screen = to - from;
    const offset = Math.max(0, Math.floor((from - screen) / BLOCK) * BLOCK);
    const limit = Math.ceil((to + screen) / BLOCK) * BLOCK - offset;
    if (this.fetchTimer && this.want?.offset === offset && this.want?.limit === limit) return;
    this.want = { offset, limit };
    clearTimeout(this.fetchTimer);
    this.fetchTimer = setTimeout(() => this.refresh({ full: true }), SCROLL_FETCH_MS);
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
    g.el.querySelector('.count').textContent = formatCount(group.total);
    // Screen readers hear how many rows the table has, not how many are in the DOM.
    g.table.setAttribute('aria-rowcount', String(group.total + 1));
    const sort = this.sort.get(group.type);
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
    hr.setAttribute('aria-rowindex', '1');
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
    const top = spacer(group.metrics.length + 1);
    const bottom = spacer(group.metrics.length + 1);
    tbody.append(top, bottom);
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
      // The server orders the whole group: the same rows of the list, anew.
      this.renderGroup(group);
      this.refresh({ full: true });
    });
    return { el, table, tbody, top, bottom, rows: new Map(), signature, metrics: group.metrics };
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

  /** A row whose resource is still on its way from the server: as tall as the others. */
  buildPlaceholder(group) {
    const tr = document.createElement('tr');
    tr.className = 'placeholder';
    const th = document.createElement('th');
    th.scope = 'row';
    th.className = 'name';
    th.innerHTML = '<span class="rname">Loading…</span>';
    tr.append(th);
    for (const m of group.metrics) {
      const td = document.createElement('td');
      td.className = `m kind-${metricKind(m)}`;
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

  // --- interaction: tooltip and detail -------------------------------------------

  bindTable() {
    this.groupsEl.addEventListener('click', (e) => {
      const cell = e.target.closest('button.cell');
      if (!cell) return;
      const tr = cell.closest('tr');
      const row = this.rows.get(Number(tr.dataset.index));
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
  }

  hideTooltip() {
    this.tooltip.hidden = true;
  }
}

/** Empty space standing for the rows of a table that are not in the DOM. */
function spacer(columns) {
  const tr = document.createElement('tr');
  tr.className = 'spacer';
  tr.setAttribute('aria-hidden', 'true');
  const td = document.createElement('td');
  td.colSpan = columns;
  tr.append(td);
  return tr;
}

function emptyState(title, text) {
  const el = document.createElement('div');
  el.className = 'empty';
  el.innerHTML = '<svg viewBox="0 0 48 24" aria-hidden="true"><path d="M2 16h9l4-9 6 14 5-10 3 5h17"/></svg><h2></h2><p></p>';
  el.querySelector('h2').textContent = title;
  el.querySelector('p').textContent = text;
  return el;
}
