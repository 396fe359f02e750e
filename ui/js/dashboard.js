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
  splitId,
  toDateTimeLocal,
} from './format.js';
import { SPARK_HEIGHT, SPARK_WIDTH, drawSparkline, pointAt } from './sparkline.js';
import { rangeBounds, rangeParams, refreshPeriod } from './state.js';

const $ = (sel, root = document) => root.querySelector(sel);

/** Points per sparkline: one per CSS pixel of its width. */
export const SPARK_POINTS = SPARK_WIDTH;

const GROUP_TITLES = {
  node: 'Nodes',
  vm: 'Virtual machines',
  container: 'Containers',
  storage: 'Storage',
  dockerHost: 'Docker hosts',
  dockerContainer: 'Docker containers',
};
const GROUP_ORDER = ['node', 'vm', 'container', 'storage', 'dockerHost', 'dockerContainer'];

/** Turns a /api/charts answer into groups of rows: [{type, title, metrics, rows:[{type,id,series}]}]. */
export function groupsFromCharts(charts) {
  const byType = new Map();
  const add = (type, id, series) => {
    if (!series || typeof series !== 'object') return;
    if (!byType.has(type)) byType.set(type, []);
    byType.get(type).push({ type, id, series });
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

function lastPoint(points) {
  return points && points.length ? points[points.length - 1] : null;
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
    this.inflight = null;
    this.seq = 0;
    this.charts = null;
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
        this.ctx.setState({ range: b.dataset.range, start: null, end: null });
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
      this.ctx.setState({ range: 'custom', start, end });
    });
    $('#refresh').addEventListener('click', () => this.refresh());
    $('#filter').addEventListener('input', (e) => {
      this.filter = e.target.value.trim().toLowerCase();
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
      this.key = key;
      this.refresh();
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

  schedule() {
    this.stopTimer();
    const period = refreshPeriod(this.ctx.state);
    if (period && this.visible && !document.hidden) this.timer = setTimeout(() => this.refresh(), period);
  }

  async refresh() {
    this.stopTimer();
    const { state } = this.ctx;
    const seq = ++this.seq;
    const path = withQuery('/api/charts', { ...rangeParams(state), maxPoints: SPARK_POINTS });
    this.ctx.status.set('Loading…', true);
    this.groupsEl.setAttribute('aria-busy', 'true');
    try {
      const charts = await api.get(path);
      if (seq !== this.seq) return;
      this.charts = charts;
      this.ctx.banner.clear('dashboard');
      this.render();
      this.ctx.detail.refreshIfOpen();
    } catch (e) {
      if (seq !== this.seq) return;
      this.ctx.banner.show(e, 'dashboard');
      this.ctx.status.set('Update failed');
      if (!this.charts) this.groupsEl.replaceChildren(emptyState('Could not load the dashboard', 'See the error above.'));
    } finally {
      if (seq === this.seq) {
        this.groupsEl.setAttribute('aria-busy', 'false');
        this.schedule();
      }
    }
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
    this.step = ((end - start) / SPARK_POINTS) | 0;
    const groups = groupsFromCharts(charts);
    this.groups = groups;
    const stats = charts.stats || {};
    const seriesCount = groups.reduce((n, g) => n + g.rows.reduce((m, r) => m + Object.keys(r.series).length, 0), 0);
    const pointCount = stats.pointCount ?? null;

    // Status line.
    const period = refreshPeriod(state, now);
    const parts = [`Updated ${formatPointTime(now, now)}`];
    if (stats.tier) parts.push(`${stats.tier} tier`);
    if (pointCount != null) parts.push(`${formatCount(pointCount)} points`);
    parts.push(period ? `auto-refresh ${period / 1000} s` : 'auto-refresh off');
    this.ctx.status.set(parts.join(' · '));

    // Notice: range reaching before the first data.
    const oldest = stats.oldestDataTimestamp || 0;
    const rangeName = state.range === 'custom' ? 'chosen' : state.range;
    if (oldest && start < oldest - Math.max(this.step, 60_000) && seriesCount) {
      this.noticeEl.hidden = false;
      this.noticeEl.textContent = `Collecting history since ${formatDateTime(oldest)} (${formatRelative(oldest, now)}): the ${rangeName} range reaches before the first data.`;
    } else {
      this.noticeEl.hidden = true;
    }

    const rowsWithData = groups.reduce((n, g) => n + g.rows.length, 0);
    if (!rowsWithData) {
      this.clearGroups();
      let title;
      let text;
      if (!oldest) {
        title = 'No history yet';
        text = 'Nothing has been recorded so far. Collectors and the write API fill this page within seconds of their first sample.';
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
    this.flushVisible();
  }

  clearGroups() {
    for (const g of this.groupEls.values()) this.forgetCanvases(g.el);
    this.groupEls.clear();
  }

  renderGroup(group) {
    const view = this.ctx.state.view;
    const signature = `${view}|${group.metrics.join(',')}`;
    let g = this.groupEls.get(group.type);
    if (!g || g.signature !== signature) {
      if (g) {
        this.forgetCanvases(g.el);
        g.el.remove();
      }
      g = this.buildGroup(group, signature);
      this.groupEls.set(group.type, g);
    }
    g.el.querySelector('.count').textContent = String(group.rows.length);

    // Rows, keyed by id, in the current sort order.
    const rows = [...group.rows];
    const sort = this.sort.get(group.type);
    if (sort && sort.metric) {
      const value = (r) => lastPoint(r.series[sort.metric])?.value ?? -Infinity;
      rows.sort((a, b) => (value(b) - value(a)) * sort.dir || compareIds(a.id, b.id));
    } else {
      rows.sort((a, b) => compareIds(a.id, b.id) * (sort?.dir ?? 1));
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
    const filler = document.createElement('th');
    filler.className = 'filler';
    filler.setAttribute('aria-hidden', 'true');
    hr.append(filler);
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
    const { name, context } = splitId(row.id);
    th.innerHTML = '<span class="rname"></span><span class="rctx"></span>';
    th.firstChild.textContent = name;
    th.lastChild.textContent = context;
    th.title = row.id;
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
        c.width = SPARK_WIDTH;
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
    const filler = document.createElement('td');
    filler.className = 'filler';
    tr.append(filler);
    return tr;
  }

  updateRow(group, row, tr) {
    const [start, end] = this.bounds;
    const staleAfter = Math.max(this.step * 3, 120_000);
    const now = this.charts.timestamp || Date.now();
    let i = 1;
    for (const m of group.metrics) {
      const td = tr.children[i++];
      const b = td.firstChild;
      const points = row.series[m] || [];
      const last = lastPoint(points);
      const v = b.querySelector('.val');
      const lvl = last ? level(m, last.value) : 'none';
      const stale = !last || now - last.timestamp > staleAfter;
      v.textContent = last ? formatValue(m, last.value) : '—';
      td.className = `m kind-${metricKind(m)} lvl-${lvl}${stale ? ' stale' : ''}`;
      const label = `${metricLabel(m)} of ${row.id}: ${last ? formatValue(m, last.value) : 'no data'}${
        last && stale ? `, last seen ${formatRelative(last.timestamp, now)}` : ''
      }. Open chart.`;
      b.setAttribute('aria-label', label);
      const canvas = b.querySelector('canvas');
      if (canvas) {
        canvas._pending = { points, opts: { start, end, metric: m, step: this.step } };
        this.pending.add(canvas);
      }
      const fill = b.querySelector('.fill');
      if (fill) fill.style.width = `${last ? Math.max(0, Math.min(100, last.value)) : 0}%`;
    }
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
    const f = this.filter;
    for (const g of this.groupEls.values()) {
      let shown = 0;
      for (const [id, tr] of g.rows) {
        const hide = !!f && !id.toLowerCase().includes(f);
        tr.hidden = hide;
        if (!hide) shown++;
      }
      g.el.hidden = shown === 0;
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
      this.ctx.detail.open({ type: tr.dataset.type, id: tr.dataset.id, metric: cell.dataset.metric, metrics });
    });
    this.groupsEl.addEventListener('pointermove', (e) => {
      const canvas = e.target.closest?.('canvas.spark');
      if (!canvas || !canvas._spark) return this.hideTooltip();
      const rect = canvas.getBoundingClientRect();
      const p = pointAt(canvas, ((e.clientX - rect.left) / rect.width) * SPARK_WIDTH);
      if (!p) return this.hideTooltip();
      const m = canvas._spark.metric;
      this.tooltip.innerHTML = '<span class="t"></span> <b></b>';
      this.tooltip.firstChild.textContent = formatPointTime(p.timestamp);
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
