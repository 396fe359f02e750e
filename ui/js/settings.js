// Settings: retention per tier, write buffer and intervals (saved through
// PUT /api/metrics-store/config) and storage health from the stats endpoint,
// with a steady-state size estimate and a "run maintenance now" button.

import { ApiError, api, withQuery } from './api.js';
import { typicalStep } from './sparkline.js';
import {
  formatBytes,
  formatCount,
  formatDateTime,
  formatDuration,
  formatRelative,
  parseDuration,
} from './format.js';

/** The editable settings: [key in the config, label, help, kind]. */
const FIELDS = [
  ['retention.raw', 'Raw retention', 'Every point as written.', 'duration'],
  ['retention.minute', 'Minute retention', '1-minute buckets (mean, min, max).', 'duration'],
  ['retention.hourly', 'Hourly retention', '1-hour buckets.', 'duration'],
  ['retention.daily', 'Daily retention', '1-day buckets.', 'duration'],
  ['write_buffer', 'Write buffer', 'Pending points that trigger a flush before the flush interval is up.', 'count'],
  ['flush_interval', 'Flush interval', 'Longest a written point waits before it is durable.', 'duration'],
  ['rollup_interval', 'Rollup interval', 'How often closed buckets are rolled up into the next tier.', 'duration'],
  ['retention_interval', 'Retention interval', 'How often data past its retention is pruned.', 'duration'],
  ['vacuum_interval', 'Vacuum interval', 'How often free space is reclaimed and the database optimized.', 'duration'],
];
const LABELS = Object.fromEntries(FIELDS.map(([k, label]) => [k, label]));
LABELS.enabled = 'Storage on disk';
LABELS.database_path = 'Database file';

const MIN = 60;
const HOUR = 3600;
const DAY = 86400;
/** The service's limits (seconds; docs/cli.md, config validation). */
const MAX_RETENTION = 3650 * DAY;
export const MAX_WRITE_BUFFER = 100000;
const RANGES = {
  flush_interval: [0.1, HOUR],
  rollup_interval: [1, HOUR],
  retention_interval: [MIN, 7 * DAY],
  vacuum_interval: [HOUR, 366 * DAY],
};

/**
 * The allowed range of each setting given the others (seconds), with why
 * its floor is what it is: the rules the service checks, so Save is only
 * offered for what it would accept.
 */
export function allowedRanges(v) {
  const rollup = v.rollup_interval ?? 300;
  const ranges = {};
  for (const [k, [lo, hi]] of Object.entries(RANGES)) ranges[k] = { lo, hi, why: '' };
  const rawLo = Math.max(2 * rollup, 2 * MIN);
  ranges['retention.raw'] = {
    lo: rawLo,
    hi: MAX_RETENTION,
    why: ` (at least twice the rollup interval, ${formatDuration(rollup)}, so raw points are rolled up before they are pruned)`,
  };
  const chain = [
    ['retention.minute', HOUR, 'one hourly bucket', 'retention.raw'],
    ['retention.hourly', DAY, 'one daily bucket', 'retention.minute'],
    ['retention.daily', DAY, 'one day', 'retention.hourly'],
  ];
  for (const [k, floor, what, finer] of chain) {
    const f = v[finer];
    const lo = Math.max(floor, f ?? 0);
    const why = f != null && f > floor ? ` (not shorter than the ${LABELS[finer].toLowerCase()}, ${formatDuration(f)})` : ` (at least ${what})`;
    ranges[k] = { lo, hi: MAX_RETENTION, why };
  }
  return ranges;
}

/**
 * What is wrong with each field of the form, in words with the allowed
 * range: `{key: message}`, empty when the service would accept it all.
 */
export function checkSettings(texts) {
  const values = {};
  const bad = {};
  for (const [key, , , kind] of FIELDS) {
    const raw = String(texts[key] ?? '').trim();
    if (kind === 'count') {
      if (/^\d+$/.test(raw)) values[key] = Number(raw);
      else bad[key] = raw;
      continue;
    }
    const secs = parseDuration(raw);
    if (secs == null) bad[key] = raw;
    else values[key] = secs;
  }
  const ranges = allowedRanges(values);
  const errors = {};
  for (const [key, label, , kind] of FIELDS) {
    if (kind === 'count') {
      const v = values[key];
      if (v == null || v < 1 || v > MAX_WRITE_BUFFER) {
        errors[key] = `${label} must be a whole number of points between 1 and ${formatCount(MAX_WRITE_BUFFER)}.`;
      }
      continue;
    }
    const r = ranges[key];
    const allowed = `between ${formatDuration(r.lo)} and ${formatDuration(r.hi)}${r.why}`;
    if (key in bad) {
      const raw = bad[key];
      errors[key] = !raw
        ? `${label} is required: a duration ${allowed}.`
        : /^\d+(\.\d+)?$/.test(raw)
          ? `${label} needs a unit (s, m, h or d, as in 90s, 5m, 2h, 7d): it must be ${allowed}.`
          : `${label}: “${raw}” is not a duration. Write e.g. 90s, 5m, 2h or 7d, ${allowed}.`;
      continue;
    }
    const v = values[key];
    if (v < r.lo || v > r.hi) errors[key] = `${label} must be ${allowed}; it is ${formatDuration(v)}.`;
  }
  return errors;
}

/** A service error for a setting, in words: "Raw retention must be at least ...". */
export function settingError(key, error) {
  const text = String(error ?? '').replace(/^config `[^`]*`:\s*/, '');
  const label = LABELS[key];
  if (!label) return text;
  return /^(must|is |has |at most|at least)/.test(text) ? `${label} ${text}` : `${label}: ${text}`;
}

/** Where a value comes from (`GET /api/metrics-store/config/sources`), in words. */
const SOURCE_TEXT = {
  settings: 'changed here',
  file: 'from the config file',
  default: 'default',
  commandLine: 'from the command line',
};

/** Bytes per stored row used by the estimate: raw points, and rolled-up buckets. */
export const RAW_ROW_BYTES = 10;
export const BUCKET_ROW_BYTES = 21;
export const OVERHEAD = 1.05;

function getPath(obj, path) {
  return path.split('.').reduce((o, k) => (o == null ? undefined : o[k]), obj);
}

function setPath(obj, path, value) {
  const keys = path.split('.');
  let o = obj;
  for (const k of keys.slice(0, -1)) o = o[k] ??= {};
  o[keys[keys.length - 1]] = value;
}

/** Maps an error key from the API (`metrics.retention.raw`) to a field key. */
function fieldKey(key) {
  return String(key ?? '').replace(/^metrics\./, '');
}

/**
 * The file size at steady state: series x (raw retention / raw interval x 10 B
 * + minute retention / 60 s x 21 B + hourly retention / 1 h x 21 B + daily
 * retention / 1 d x 21 B), plus 5 % overhead. Seconds in, bytes out.
 */
export function estimateSize({ series, rawInterval, raw, minute, hourly, daily }) {
  const tiers = {
    raw: series * (raw / rawInterval) * RAW_ROW_BYTES,
    minute: series * (minute / 60) * BUCKET_ROW_BYTES,
    hourly: series * (hourly / 3600) * BUCKET_ROW_BYTES,
    daily: series * (daily / 86400) * BUCKET_ROW_BYTES,
  };
  const total = (tiers.raw + tiers.minute + tiers.hourly + tiers.daily) * OVERHEAD;
  return { tiers, total };
}

/**
 * The interval between raw points, observed from the stats: raw rows per
 * series spread over the time raw data covers (the raw retention, or less
 * while history is younger than it). Seconds, or null when unknown.
 */
export function observedRawInterval(stats, rawRetention, now = Date.now()) {
  const series = stats.seriesCount || 0;
  const rows = stats.rawCount || 0;
  if (!series || !rows) return null;
  const age = stats.oldestDataTimestamp ? (now - stats.oldestDataTimestamp) / 1000 : rawRetention;
  const span = Math.max(1, Math.min(rawRetention, age));
  const perSeries = rows / series;
  if (perSeries < 2) return null;
  return span / perSeries;
}

export class Settings {
  constructor(ctx) {
    this.ctx = ctx;
    this.el = document.getElementById('page-settings');
    this.config = null;
    this.stats = null;
    this.timer = null;
    this.built = false;
    this.sources = null;
    /** Errors the service gave for fields, shown until the field is edited. */
    this.serverErrors = new Map();
    document.addEventListener('visibilitychange', () => {
      if (!document.hidden && !this.el.hidden && this.built) this.load();
    });
  }

  show() {
    if (!this.built) this.build();
    this.el.hidden = false;
    // Re-read the configuration unless the user has unsaved edits.
    if (!this.changes().n) this.config = null;
    this.load();
  }

  hide() {
    clearTimeout(this.timer);
    this.timer = null;
  }

  build() {
    this.built = true;
    this.el.innerHTML = `
      <div class="settings">
        <form class="card" id="config-form" novalidate>
          <div class="card-head">
            <h2>Retention and intervals</h2>
            <p class="muted">Durations like <code>90s</code>, <code>5m</code>, <code>2h</code>, <code>168h</code>, <code>90d</code>. Changes are applied without a restart and kept in <code>settings.json</code> in the data directory, over the configuration file, which is never written.</p>
            <p class="muted files" id="config-files"></p>
          </div>
          <fieldset class="fields" id="retention-fields"><legend>Retention per tier</legend></fieldset>
          <fieldset class="fields" id="other-fields"><legend>Writing and background jobs</legend></fieldset>
          <dl class="readonly" id="config-readonly"></dl>
          <div class="form-actions">
            <button type="submit" class="btn primary" id="save" disabled>Save</button>
            <button type="button" class="btn" id="reset" disabled>Undo changes</button>
            <button type="button" class="btn" id="reset-file" disabled title="Forget the values changed here and use the configuration file's">Reset to file</button>
            <span class="save-status" id="save-status" role="status" aria-live="polite"></span>
          </div>
        </form>
        <div class="side">
          <section class="card" id="estimate" aria-labelledby="estimate-title">
            <div class="card-head"><h2 id="estimate-title">Size at steady state</h2></div>
            <div class="estimate-body"></div>
          </section>
          <section class="card" id="health" aria-labelledby="health-title">
            <div class="card-head row">
              <h2 id="health-title">Storage health</h2>
              <button type="button" class="btn" id="maintain">Run maintenance now</button>
            </div>
            <div class="maintain-result" id="maintain-result" role="status" aria-live="polite" hidden></div>
            <div class="health-body"><p class="muted">Loading…</p></div>
          </section>
        </div>
      </div>`;
    const form = this.el.querySelector('#config-form');
    for (const [key, label, help, kind] of FIELDS) {
      const target = key.startsWith('retention.') ? '#retention-fields' : '#other-fields';
      const id = `cfg-${key.replace(/[._]/g, '-')}`;
      const row = document.createElement('div');
      row.className = 'field';
      row.dataset.key = key;
      row.innerHTML = `
        <label for="${id}"></label>
        <div class="control">
          <input id="${id}" name="${key}" ${kind === 'count' ? 'inputmode="numeric"' : ''} autocomplete="off" spellcheck="false" aria-describedby="${id}-help ${id}-error">
          <span class="parsed" aria-hidden="true"></span>
        </div>
        <p class="help" id="${id}-help"><span class="text"></span> <span class="source"></span></p>
        <p class="error" id="${id}-error" hidden></p>`;
      row.querySelector('label').textContent = label;
      row.querySelector('.help .text').textContent = help;
      form.querySelector(target).append(row);
      const input = row.querySelector('input');
      input.addEventListener('input', () => {
        this.serverErrors.delete(key);
        this.updateParsed(key);
        this.updateDirty();
        this.renderEstimate();
      });
    }
    form.addEventListener('submit', (e) => {
      e.preventDefault();
      this.save();
    });
    this.el.querySelector('#reset').addEventListener('click', () => {
      this.serverErrors.clear();
      this.fillForm(this.config);
      this.ctx.banner.clear('settings');
      this.setSaveStatus('');
    });
    this.el.querySelector('#reset-file').addEventListener('click', () => this.resetToFile());
    this.el.querySelector('#maintain').addEventListener('click', () => this.maintain());
  }

  input(key) {
    return this.el.querySelector(`input[name="${key}"]`);
  }

  async load() {
    clearTimeout(this.timer);
    try {
      const [config, stats, sources] = await Promise.all([
        this.config ? Promise.resolve(null) : api.get('/api/metrics-store/config'),
        api.get('/api/metrics-store/stats'),
        // Older services have no sources: the form works without them.
        this.config ? Promise.resolve(null) : api.get('/api/metrics-store/config/sources').catch(() => null),
      ]);
      if (config) {
        this.config = config;
        this.sources = sources;
        this.fillForm(config);
      }
      this.stats = stats;
      this.statsAt = Date.now();
      if (!this.sampled && stats.seriesCount) await this.sampleRawInterval();
      this.renderHealth();
      this.renderEstimate();
      this.ctx.banner.clear('settings-load');
      this.ctx.status.set(`Stats updated ${formatRelative(this.statsAt)}`);
    } catch (e) {
      this.ctx.banner.show(e, 'settings-load');
      if (!this.stats) this.el.querySelector('.health-body').innerHTML = '<p class="muted">Stats unavailable.</p>';
    }
    if (!this.el.hidden && !document.hidden) this.timer = setTimeout(() => this.load(), 10_000);
  }

  /**
   * Measures the raw interval from the data: the median spacing of the last
   * 15 minutes of raw points of the most recently written series.
   */
  async sampleRawInterval() {
    this.sampled = true;
    try {
      const { series = [] } = await api.get('/api/metrics-store/series');
      const recent = series
        .filter((s) => s.lastTimestamp)
        .sort((a, b) => b.lastTimestamp - a.lastTimestamp)
        .slice(0, 3);
      const steps = [];
      for (const s of recent) {
        const h = await api.get(
          withQuery('/api/metrics-store/history', { resourceType: s.resourceType, resourceId: s.resourceId, metric: s.metric, range: '15m' }),
        );
        if (h.tier !== 'raw' || !h.points || h.points.length < 3) continue;
        const step = typicalStep(h.points);
        if (step > 0) steps.push(step / 1000);
      }
      steps.sort((a, b) => a - b);
      this.sampledInterval = steps.length ? steps[(steps.length - 1) >> 1] : null;
    } catch {
      // The stats-based figure stands in; the stats call reports errors.
      this.sampledInterval = null;
    }
  }

  fillForm(config) {
    for (const [key] of FIELDS) {
      const v = getPath(config, key);
      this.input(key).value = v == null ? '' : String(v);
      this.updateParsed(key);
    }
    const ro = this.el.querySelector('#config-readonly');
    ro.innerHTML = '';
    const add = (k, v) => {
      const dt = document.createElement('dt');
      dt.textContent = k;
      const dd = document.createElement('dd');
      dd.textContent = v;
      ro.append(dt, dd);
    };
    const src = this.sources?.sources || {};
    const from = (k) => (src[k] ? ` (${SOURCE_TEXT[src[k]] ?? src[k]})` : '');
    add('Storage', (config.enabled === false ? 'memory only (metrics.enabled: false)' : 'on disk') + from('enabled'));
    add('Database', (config.database_path ?? '—') + from('database_path'));
    for (const [key] of FIELDS) {
      const el = this.el.querySelector(`.field[data-key="${key}"] .source`);
      const where = src[key];
      el.textContent = where ? `Now ${SOURCE_TEXT[where] ?? where}${where === 'settings' ? `; the file says ${getPath(this.sources.file, key)}` : ''}.` : '';
      el.dataset.source = where || '';
    }
    const files = this.el.querySelector('#config-files');
    const cf = this.sources?.configFile;
    const sf = this.sources?.settingsFile;
    files.textContent = [
      cf ? `Configuration file: ${cf}.` : 'No configuration file: defaults apply under the changes made here.',
      sf ? `Changes made here: ${sf}.` : 'Changes made here last until the service restarts.',
    ].join(' ');
    const overridden = Object.values(src).some((v) => v === 'settings');
    this.el.querySelector('#reset-file').disabled = !overridden;
    this.updateDirty();
  }

  updateParsed(key) {
    const field = FIELDS.find((f) => f[0] === key);
    const input = this.input(key);
    const out = input.parentElement.querySelector('.parsed');
    if (field[3] === 'duration') {
      const s = parseDuration(input.value);
      out.textContent = s == null ? (input.value.trim() ? 'not a duration' : '') : formatDuration(s);
      out.classList.toggle('bad', s == null && !!input.value.trim());
    } else {
      const ok = /^\d+$/.test(input.value.trim());
      out.textContent = ok ? 'points' : input.value.trim() ? 'not a whole number' : '';
      out.classList.toggle('bad', !ok && !!input.value.trim());
    }
  }

  /** Fields whose input differs from the loaded config, as a partial config. */
  changes() {
    const patch = {};
    let n = 0;
    if (!this.config) return { patch, n };
    for (const [key, , , kind] of FIELDS) {
      const raw = this.input(key).value.trim();
      const current = getPath(this.config, key);
      if (raw === String(current ?? '')) continue;
      let value = raw;
      if (kind === 'count' && /^\d+$/.test(raw)) value = Number(raw);
      setPath(patch, key, value);
      n++;
    }
    return { patch, n };
  }

  /** The form's values as text, by key. */
  texts() {
    return Object.fromEntries(FIELDS.map(([key]) => [key, this.input(key).value]));
  }

  /**
   * Marks what changed, checks every field as the service would (messages
   * in words, with the allowed range) and offers Save only for a change
   * that is valid as a whole.
   */
  updateDirty() {
    const { n } = this.changes();
    const errors = this.config ? checkSettings(this.texts()) : {};
    for (const [key] of FIELDS) {
      const raw = this.input(key).value.trim();
      this.input(key).closest('.field').classList.toggle('changed', !!this.config && raw !== String(getPath(this.config, key) ?? ''));
      this.clearFieldError(key);
      const message = errors[key] ?? this.serverErrors.get(key);
      if (message) this.showFieldError(key, message);
    }
    const invalid = Object.keys(errors).length > 0;
    this.el.querySelector('#save').disabled = n === 0 || invalid;
    this.el.querySelector('#save').title = invalid ? 'Fix the highlighted fields first' : '';
    this.el.querySelector('#reset').disabled = n === 0;
    this.el.querySelector('#config-form').dataset.valid = String(!invalid);
  }

  setSaveStatus(text, kind = '') {
    const el = this.el.querySelector('#save-status');
    el.textContent = text;
    el.className = `save-status ${kind}`;
  }

  clearFieldError(key) {
    const row = this.el.querySelector(`.field[data-key="${key}"]`);
    if (!row) return;
    row.classList.remove('invalid');
    const err = row.querySelector('.error');
    err.hidden = true;
    err.textContent = '';
    row.querySelector('input').removeAttribute('aria-invalid');
  }

  clearFieldErrors() {
    for (const [key] of FIELDS) this.clearFieldError(key);
  }

  showFieldError(key, text) {
    const row = this.el.querySelector(`.field[data-key="${key}"]`);
    if (!row) return false;
    row.classList.add('invalid');
    const err = row.querySelector('.error');
    err.textContent = err.textContent ? `${err.textContent} ${text}` : text;
    err.hidden = false;
    row.querySelector('input').setAttribute('aria-invalid', 'true');
    return true;
  }

  async save() {
    const { patch, n } = this.changes();
    if (!n || Object.keys(checkSettings(this.texts())).length) return;
    this.serverErrors.clear();
    const button = this.el.querySelector('#save');
    button.disabled = true;
    this.setSaveStatus('Saving…');
    try {
      const answer = await api.put('/api/metrics-store/config', patch);
      await this.applied(answer, 'Saved');
    } catch (e) {
      this.refused(e);
    }
  }

  /** "Reset to file": forgets every value changed here (DELETE). */
  async resetToFile() {
    this.serverErrors.clear();
    this.setSaveStatus('Resetting…');
    try {
      const answer = await api.del('/api/metrics-store/config');
      await this.applied(answer, 'Reset to the configuration file');
    } catch (e) {
      this.refused(e);
    }
  }

  async applied(answer, what) {
    const { restartRequired, persisted, ...config } = answer || {};
    this.config = config;
    this.sources = await api.get('/api/metrics-store/config/sources').catch(() => null);
    this.fillForm(config);
    this.ctx.banner.clear('settings');
    const where = this.sources?.settingsFile;
    const parts = [
      persisted === false
        ? `${what} and applied until the service restarts (it keeps no settings file).`
        : `${what} and applied${where ? ` (kept in ${where}; the configuration file is left as it is)` : ''}.`,
    ];
    if (Array.isArray(restartRequired) && restartRequired.length) {
      parts.push(`Takes effect after a restart: ${restartRequired.map((k) => LABELS[fieldKey(k)] ?? k).join(', ')}.`);
    }
    this.setSaveStatus(parts.join(' '), persisted === false ? 'warn' : 'ok');
    this.renderEstimate();
  }

  refused(e) {
    let placed = 0;
    if (e instanceof ApiError && Array.isArray(e.details)) {
      for (const d of e.details) {
        if (!d || typeof d !== 'object') continue;
        const key = fieldKey(d.key ?? d.field);
        if (FIELDS.some(([k]) => k === key)) {
          this.serverErrors.set(key, settingError(key, d.error ?? d.message ?? ''));
          placed++;
        }
      }
    }
    this.updateDirty();
    if (placed) {
      this.ctx.banner.show(new Error(`Not saved: ${[...this.serverErrors.values()].join(' ')}`), 'settings');
    } else {
      this.ctx.banner.show(e, 'settings');
    }
    this.setSaveStatus(placed ? 'Not saved: fix the highlighted field.' : 'Not saved.', 'bad');
    this.el.querySelector('.field.invalid input')?.focus();
  }

  async maintain() {
    const button = this.el.querySelector('#maintain');
    const out = this.el.querySelector('#maintain-result');
    button.disabled = true;
    button.textContent = 'Running…';
    try {
      const report = await api.post('/api/metrics-store/maintenance');
      out.hidden = false;
      out.className = 'maintain-result ok';
      out.textContent = summariseMaintenance(report);
      this.ctx.banner.clear('maintain');
      this.load();
    } catch (e) {
      out.hidden = false;
      out.className = 'maintain-result bad';
      out.textContent = `Maintenance failed: ${e.message}`;
      this.ctx.banner.show(e, 'maintain');
    } finally {
      button.disabled = false;
      button.textContent = 'Run maintenance now';
    }
  }

  /** Values from the form when they parse, else from the loaded config (seconds). */
  formRetention() {
    const get = (key) => {
      const fromForm = parseDuration(this.input(key)?.value ?? '');
      return fromForm ?? parseDuration(String(getPath(this.config || {}, key) ?? ''));
    };
    return { raw: get('retention.raw'), minute: get('retention.minute'), hourly: get('retention.hourly'), daily: get('retention.daily') };
  }

  renderEstimate() {
    const body = this.el.querySelector('#estimate .estimate-body');
    if (!this.stats || !this.config) return;
    const r = this.formRetention();
    if ([r.raw, r.minute, r.hourly, r.daily].some((v) => v == null)) {
      body.innerHTML = '<p class="muted">Enter valid durations to see the estimate.</p>';
      return;
    }
    const configuredRaw = parseDuration(String(this.config.retention?.raw ?? '')) ?? r.raw;
    const sampled = this.sampledInterval;
    const observed = sampled ?? observedRawInterval(this.stats, configuredRaw, this.statsAt);
    const rawInterval = observed ?? 5;
    const series = this.stats.seriesCount || 0;
    const { tiers, total } = estimateSize({ series, rawInterval, ...r });
    const current = (this.stats.dbSize || 0) + (this.stats.walSize || 0);
    body.innerHTML = `
      <div class="big" data-estimate-bytes="${Math.round(total)}"><span class="v"></span><span class="s">estimate</span></div>
      <p class="muted basis"></p>
      <table class="mini">
        <thead><tr><th scope="col">Tier</th><th scope="col">Kept</th><th scope="col">Rows per series</th><th scope="col">Size</th></tr></thead>
        <tbody></tbody>
      </table>
      <p class="muted formula">series × (raw retention ÷ raw interval × ${RAW_ROW_BYTES} B + minute retention ÷ 60 s × ${BUCKET_ROW_BYTES} B + hourly retention ÷ 1 h × ${BUCKET_ROW_BYTES} B + daily retention ÷ 1 d × ${BUCKET_ROW_BYTES} B) + 5 %. Now: <span class="now"></span>.</p>`;
    body.querySelector('.big .v').textContent = `≈ ${formatBytes(total)}`;
    body.querySelector('.basis').textContent = `For ${formatCount(series)} series with a raw point every ${formatDuration(rawInterval)} (${
      sampled ? 'measured on the newest raw points' : observed ? 'raw rows per series over the raw retention' : 'assumed: not enough raw data yet'
    }) and the retention ${this.changes().n ? 'entered above (not saved yet)' : 'configured'}.`;
    body.querySelector('.now').textContent = `${formatBytes(current)} on disk`;
    const rows = [
      ['Raw', r.raw, r.raw / rawInterval, tiers.raw],
      ['Minute', r.minute, r.minute / 60, tiers.minute],
      ['Hourly', r.hourly, r.hourly / 3600, tiers.hourly],
      ['Daily', r.daily, r.daily / 86400, tiers.daily],
    ];
    const tbody = body.querySelector('tbody');
    for (const [name, kept, perSeries, bytes] of rows) {
      const tr = document.createElement('tr');
      for (const v of [name, formatDuration(kept), formatCount(Math.round(perSeries)), formatBytes(bytes * OVERHEAD)]) {
        const td = document.createElement('td');
        td.textContent = v;
        tr.append(td);
      }
      tbody.append(tr);
    }
  }

  renderHealth() {
    const s = this.stats;
    const now = this.statsAt || Date.now();
    const body = this.el.querySelector('.health-body');
    const when = (ms) => (ms ? `${formatRelative(ms, now)}` : 'never');
    const whenTitle = (ms) => (ms ? formatDateTime(ms) : '');
    const items = [
      ['Database file', s.dbPath || '—', '', 'path'],
      ['File size', formatBytes(s.dbSize), `WAL ${formatBytes(s.walSize)}${s.freePages ? ` · ${formatCount(s.freePages)} free pages` : ''}`],
      ['Series', formatCount(s.seriesCount), `${formatCount(s.totalWrites)} points written`],
      ['Oldest data', s.oldestDataTimestamp ? formatRelative(s.oldestDataTimestamp, now) : 'none yet', whenTitle(s.oldestDataTimestamp)],
      ['Dropped writes', formatCount(s.droppedWrites), s.droppedWrites ? 'points refused while the queue was full (lost unless the sender retried)' : 'none', s.droppedWrites ? 'bad' : ''],
      ['Write buffer', formatCount(s.bufferSize), 'points waiting for the next flush'],
      ['Late points', formatCount(s.lateCount || 0), 'older than the raw retention, folded in at the next rollup'],
    ];
    const jobs = [
      ['Last flush', s.lastFlush],
      ['Last rollup', s.lastRollup],
      ['Last retention', s.lastRetention],
      ['Last vacuum', s.lastVacuum],
    ];
    const tiers = [
      ['Raw', s.rawCount],
      ['Minute', s.minuteCount],
      ['Hourly', s.hourlyCount],
      ['Daily', s.dailyCount],
    ];
    const frag = document.createDocumentFragment();
    if (s.enabled === false) {
      const p = document.createElement('p');
      p.className = 'callout warn';
      p.textContent = 'Persistence is off (metrics.enabled: false): history is kept in memory and lost at restart.';
      frag.append(p);
    }
    const grid = document.createElement('dl');
    grid.className = 'kv';
    for (const [k, v, sub, cls] of items) grid.append(kv(k, v, sub, cls));
    frag.append(grid);

    const tierTable = document.createElement('table');
    tierTable.className = 'mini tiers';
    tierTable.innerHTML = '<caption>Rows per tier</caption><tbody></tbody>';
    const total = tiers.reduce((n, [, c]) => n + (c || 0), 0) || 1;
    for (const [name, count] of tiers) {
      const tr = document.createElement('tr');
      tr.dataset.tier = name.toLowerCase();
      tr.innerHTML = '<th scope="row"></th><td class="num"></td><td class="barcell"><span class="bar"><span class="fill"></span></span></td>';
      tr.children[0].textContent = name;
      tr.children[1].textContent = formatCount(count);
      tr.querySelector('.fill').style.width = `${((count || 0) / total) * 100}%`;
      tierTable.tBodies[0].append(tr);
    }
    frag.append(tierTable);

    const jobList = document.createElement('dl');
    jobList.className = 'kv jobs';
    for (const [k, ms] of jobs) jobList.append(kv(k, when(ms), whenTitle(ms)));
    frag.append(jobList);

    const err = document.createElement('div');
    err.className = `last-error ${s.lastError ? 'bad' : 'ok'}`;
    err.innerHTML = '<span class="k">Last error</span> <span class="v"></span>';
    err.querySelector('.v').textContent = s.lastError || 'none';
    frag.append(err);

    if (Array.isArray(s.collectors) && s.collectors.length) {
      const t = document.createElement('table');
      t.className = 'mini collectors';
      t.innerHTML =
        '<caption>Collectors</caption><thead><tr><th scope="col">Name</th><th scope="col">State</th><th scope="col">Last success</th><th scope="col">Points</th></tr></thead><tbody></tbody>';
      for (const c of s.collectors) {
        const tr = document.createElement('tr');
        const bad = c.consecutiveFailures > 0 || (c.lastError && c.lastError !== '');
        tr.className = bad ? 'bad' : '';
        const errors = c.errors ? ` · ${formatCount(c.errors)} errors since start` : '';
        for (const v of [c.name, c.state + (c.consecutiveFailures ? ` (${c.consecutiveFailures} failures)` : '') + errors, when(c.lastSuccess), formatCount(c.pointsWritten)]) {
          const td = document.createElement('td');
          td.textContent = v ?? '—';
          tr.append(td);
        }
        if (c.lastError) tr.title = c.lastError;
        t.tBodies[0].append(tr);
        if (c.lastError) {
          const er = document.createElement('tr');
          er.className = 'collector-error';
          er.innerHTML = '<td colspan="4"></td>';
          er.firstChild.textContent = c.lastError;
          t.tBodies[0].append(er);
        }
      }
      frag.append(t);
    }
    body.replaceChildren(frag);
  }
}

function kv(k, v, sub = '', cls = '') {
  const d = document.createElement('div');
  d.className = `kvi ${cls}`;
  d.dataset.k = k.toLowerCase().replace(/\s+/g, '-');
  d.innerHTML = '<dt></dt><dd><span class="v"></span><span class="s"></span></dd>';
  d.querySelector('dt').textContent = k;
  d.querySelector('.v').textContent = v;
  d.querySelector('.s').textContent = sub;
  if (cls === 'path') d.querySelector('.v').title = v;
  return d;
}

/** A sentence for the maintenance report (any shape: the known fields, else JSON). */
export function summariseMaintenance(report) {
  if (!report || typeof report !== 'object') return 'Maintenance done.';
  const r = report.rollup || {};
  const p = report.prune || {};
  const c = report.reclaim || report.vacuum?.reclaim || {};
  const parts = [];
  if (r.minuteBuckets != null) parts.push(`${formatCount(r.minuteBuckets)} minute, ${formatCount(r.hourlyBuckets ?? 0)} hourly, ${formatCount(r.dailyBuckets ?? 0)} daily buckets rolled up`);
  const pruned = ['rawPoints', 'minuteBuckets', 'hourlyBuckets', 'dailyBuckets'].reduce((n, k) => n + (p[k] || 0), 0);
  if (p.now != null) parts.push(`${formatCount(pruned)} rows past retention pruned`);
  if (c.bytesFreed != null) parts.push(`${formatBytes(c.bytesFreed)} reclaimed`);
  const ms = (r.durationMs || 0) + (p.durationMs || 0) + (c.durationMs || 0);
  if (!parts.length) return `Maintenance done: ${JSON.stringify(report).slice(0, 200)}`;
  return `Maintenance done${ms ? ` in ${ms < 10 ? ms.toFixed(1) : Math.round(ms)} ms` : ''}: ${parts.join('; ')}.`;
}
