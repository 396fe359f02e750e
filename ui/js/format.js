// Units, numbers, times and durations as the UI shows them.

/** Metrics shown as percentages, with Pulse's colour thresholds (warn, crit). */
export const THRESHOLDS = {
  cpu: [80, 90],
  memory: [75, 85],
  disk: [80, 90],
};

const PERCENT_METRICS = new Set(['cpu', 'memory', 'disk', 'swap', 'usage']);
const RATE_METRICS = new Set(['diskread', 'diskwrite', 'netin', 'netout']);
const METRIC_ORDER = ['cpu', 'memory', 'disk', 'swap', 'diskread', 'diskwrite', 'netin', 'netout'];
const METRIC_LABELS = {
  cpu: 'CPU',
  memory: 'Memory',
  disk: 'Disk',
  swap: 'Swap',
  diskread: 'Disk read',
  diskwrite: 'Disk write',
  netin: 'Net in',
  netout: 'Net out',
};

/** 'percent' | 'rate' | 'number' */
export function metricKind(metric) {
  if (PERCENT_METRICS.has(metric) || /percent$/i.test(metric)) return 'percent';
  if (RATE_METRICS.has(metric) || /(bytes|rate|_bps)$/i.test(metric)) return 'rate';
  return 'number';
}

export function metricLabel(metric) {
  return METRIC_LABELS[metric] ?? metric;
}

/** Sorts metric names: Pulse's order first, then the rest alphabetically. */
export function compareMetrics(a, b) {
  const ia = METRIC_ORDER.indexOf(a);
  const ib = METRIC_ORDER.indexOf(b);
  if (ia !== -1 || ib !== -1) return (ia === -1 ? 99 : ia) - (ib === -1 ? 99 : ib);
  return a.localeCompare(b);
}

/** 'ok' | 'warn' | 'crit' for a value of a metric ('ok' when it has no thresholds). */
export function level(metric, value) {
  const t = THRESHOLDS[metric];
  if (!t || value == null || !Number.isFinite(value)) return 'ok';
  if (value >= t[1]) return 'crit';
  if (value >= t[0]) return 'warn';
  return 'ok';
}

const numberFormats = new Map();
function fixed(digits) {
  let f = numberFormats.get(digits);
  if (!f) {
    f = new Intl.NumberFormat(undefined, { minimumFractionDigits: digits, maximumFractionDigits: digits });
    numberFormats.set(digits, f);
  }
  return f;
}

export function formatNumber(value, digits) {
  if (value == null || !Number.isFinite(value)) return '—';
  if (digits == null) {
    const abs = Math.abs(value);
    digits = abs >= 100 ? 0 : abs >= 10 ? 1 : 2;
  }
  return fixed(digits).format(value);
}

const percentFormats = new Map();

/** A percentage (0-100) in the browser's locale: "93%", "9.5%", "12,5 %". */
export function formatPercent(value, digits = null) {
  if (value == null || !Number.isFinite(value)) return '—';
  digits ??= Math.abs(value) >= 10 ? 0 : 1;
  let f = percentFormats.get(digits);
  if (!f) {
    f = new Intl.NumberFormat(undefined, { style: 'percent', minimumFractionDigits: digits, maximumFractionDigits: digits });
    percentFormats.set(digits, f);
  }
  return f.format(value / 100);
}

const BYTE_UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];

export function formatBytes(value) {
  if (value == null || !Number.isFinite(value)) return '—';
  let v = Math.abs(value);
  let i = 0;
  // Switch units at 1000 so a value never needs four digits ("0.98 MiB", not "1,002 KiB").
  while (v >= 1000 && i < BYTE_UNITS.length - 1) {
    v /= 1024;
    i++;
  }
  const digits = i === 0 ? 0 : v >= 100 ? 0 : v >= 10 ? 1 : 2;
  return `${value < 0 ? '-' : ''}${fixed(digits).format(v)} ${BYTE_UNITS[i]}`;
}

export function formatRate(value) {
  if (value == null || !Number.isFinite(value)) return '—';
  return `${formatBytes(value)}/s`;
}

/** Formats a metric's value with its unit. */
export function formatValue(metric, value) {
  switch (metricKind(metric)) {
    case 'percent':
      return formatPercent(value);
    case 'rate':
      return formatRate(value);
    default:
      return formatNumber(value);
  }
}

export function formatCount(value) {
  if (value == null || !Number.isFinite(value)) return '—';
  return fixed(0).format(value);
}

const relative = new Intl.RelativeTimeFormat(undefined, { numeric: 'auto', style: 'short' });

/** "2 min ago", "in 5 sec"; `never` for 0 / missing. */
export function formatRelative(ms, now = Date.now()) {
  if (!ms) return 'never';
  const diff = (ms - now) / 1000;
  const abs = Math.abs(diff);
  if (abs < 5) return 'just now';
  if (abs < 60) return relative.format(Math.round(diff), 'second');
  if (abs < 3600) return relative.format(Math.round(diff / 60), 'minute');
  if (abs < 86400 * 2) return relative.format(Math.round(diff / 3600), 'hour');
  return relative.format(Math.round(diff / 86400), 'day');
}

const dateTime = new Intl.DateTimeFormat(undefined, {
  year: 'numeric',
  month: 'short',
  day: 'numeric',
  hour: '2-digit',
  minute: '2-digit',
  second: '2-digit',
});
const timeOnly = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit', second: '2-digit' });
const dayTime = new Intl.DateTimeFormat(undefined, { month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit' });
const hourMinute = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' });
const dayOnly = new Intl.DateTimeFormat(undefined, { month: 'short', day: 'numeric' });
const localDay = new Intl.DateTimeFormat(undefined, { year: 'numeric', month: '2-digit', day: '2-digit' });

export function formatDateTime(ms) {
  if (!ms) return 'never';
  return dateTime.format(new Date(ms));
}

/** Whether a window spans more than one calendar day here: its times then need a date. */
export function spansDays(start, end) {
  if (!(end > start)) return false;
  return end - start > 86_400_000 || localDay.format(new Date(start)) !== localDay.format(new Date(end));
}

/**
 * The time of a point: with its date when the window it is shown in spans
 * more than one day (`withDate`), else the time of day.
 */
export function formatPointTime(ms, withDate = false) {
  return (withDate ? dayTime : timeOnly).format(new Date(ms));
}

/**
 * Labels for a time axis (uPlot `values`), in the browser's locale: times
 * of day within a day, day and time over a few days, days beyond.
 */
export function timeAxisLabels(splits, spanMs) {
  const withDate = splits.length > 1 && spansDays(splits[0] * 1000, splits[splits.length - 1] * 1000);
  const f = spanMs > 4 * 86_400_000 ? dayOnly : withDate ? dayTime : hourMinute;
  return splits.map((s) => f.format(new Date(s * 1000)));
}

/** Value for a `datetime-local` input (local time, minutes). */
export function toDateTimeLocal(ms) {
  const d = new Date(ms);
  const pad = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

const UNIT_SECONDS = { ms: 0.001, s: 1, m: 60, h: 3600, d: 86400, w: 604800 };

/**
 * Parses a duration as the config writes it ("90s", "5m", "2h", "168h", "90d",
 * also "1h30m"). Returns seconds, or null when it is not a duration.
 */
export function parseDuration(text) {
  if (typeof text !== 'string') return null;
  const s = text.trim().toLowerCase().replace(/\s+/g, '');
  if (!s) return null;
  const re = /(\d+(?:\.\d+)?)(ms|s|m|h|d|w)/gy;
  let total = 0;
  let matched = 0;
  let m;
  while ((m = re.exec(s))) {
    total += parseFloat(m[1]) * UNIT_SECONDS[m[2]];
    matched = re.lastIndex;
  }
  return matched === s.length ? total : null;
}

/** "2 h", "7 d", "1 h 30 min": a duration in seconds for people. */
export function formatDuration(seconds) {
  if (seconds == null || !Number.isFinite(seconds)) return '—';
  if (seconds === 0) return '0 s';
  if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
  const parts = [];
  let rest = Math.round(seconds);
  for (const [unit, size] of [
    ['d', 86400],
    ['h', 3600],
    ['min', 60],
    ['s', 1],
  ]) {
    if (rest >= size) {
      const n = Math.floor(rest / size);
      rest -= n * size;
      parts.push(`${n} ${unit}`);
    }
    if (parts.length === 2) break;
  }
  return parts.join(' ') || '0 s';
}

/** Splits an id (`pve1:101`, `pve1:node1:local`) into its last part and the context before it. */
export function splitId(id) {
  const i = id.lastIndexOf(':');
  if (i <= 0 || i === id.length - 1) return { name: id, context: '' };
  return { name: id.slice(i + 1), context: id.slice(0, i) };
}

/**
 * What a row or a chart title shows of a resource: the name people know it
 * by first ("web01"), then what tells it apart (VMID, node); without a name,
 * its id as before (last part, then the rest). `meta` is the resource's
 * metadata from the API (`name`, `node`, `tags`, ...), if any.
 */
export function resourceLabel(type, id, meta) {
  const { name: last, context } = splitId(id);
  if (!meta?.name) return { name: last, context };
  const parts = [];
  if ((type === 'vm' || type === 'container') && /^\d+$/.test(last)) parts.push(`${type === 'vm' ? 'VM' : 'CT'} ${last}`);
  if (meta.node && meta.node !== meta.name) parts.push(meta.node);
  return { name: meta.name, context: parts.join(' · ') };
}
