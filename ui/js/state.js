// View state kept in the URL (?range=1h&view=trends, #/settings) and in
// localStorage, so a reload or a shared link shows the same thing.

export const RANGES = ['15m', '1h', '4h', '24h', '7d', '30d', '90d'];
export const ALL_RANGES = ['5m', '15m', '30m', '1h', '4h', '8h', '12h', '24h', '7d', '30d', '90d'];
export const VIEWS = ['trends', 'bars'];
const STORE_KEY = 'pulse-metrics.view';

const RANGE_SECONDS = { m: 60, h: 3600, d: 86400 };

/** Seconds in a range name like `15m`, `24h`, `7d`. */
export function rangeSeconds(range) {
  const m = /^(\d+)([mhd])$/.exec(range);
  return m ? Number(m[1]) * RANGE_SECONDS[m[2]] : null;
}

function stored() {
  try {
    return JSON.parse(localStorage.getItem(STORE_KEY) || '{}') || {};
  } catch {
    return {};
  }
}

/** Reads the state: URL first, then localStorage, then defaults. */
export function readState() {
  const url = new URL(location.href);
  const q = url.searchParams;
  const saved = stored();
  const state = {
    page: location.hash.startsWith('#/settings') ? 'settings' : 'dashboard',
    range: '1h',
    start: null,
    end: null,
    view: 'trends',
    // No range in the URL or saved: the dashboard picks one that fits the
    // history (15m while it is younger than an hour), and keeps it out of
    // the URL and localStorage so the next visit picks again.
    autoRange: false,
  };
  const start = Number(q.get('start') ?? (q.has('range') ? NaN : saved.start));
  const end = Number(q.get('end') ?? (q.has('range') ? NaN : saved.end));
  const range = q.get('range') ?? saved.range;
  if (Number.isFinite(start) && Number.isFinite(end) && start > 0 && end > start && (!range || range === 'custom')) {
    state.range = 'custom';
    state.start = start;
    state.end = end;
  } else if (ALL_RANGES.includes(range)) {
    state.range = range;
  } else {
    state.autoRange = true;
  }
  const view = q.get('view') ?? saved.view;
  if (VIEWS.includes(view)) state.view = view;
  return state;
}

/** Writes the state to the URL (replacing the history entry) and localStorage. */
export function writeState(state) {
  const url = new URL(location.href);
  const q = url.searchParams;
  if (state.autoRange) q.delete('range');
  else q.set('range', state.range);
  if (state.range === 'custom') {
    q.set('start', String(state.start));
    q.set('end', String(state.end));
  } else {
    q.delete('start');
    q.delete('end');
  }
  q.set('view', state.view);
  url.hash = state.page === 'settings' ? '#/settings' : '';
  const next = url.pathname + url.search + url.hash;
  if (next !== location.pathname + location.search + location.hash) history.replaceState(null, '', next);
  try {
    const range = state.autoRange ? undefined : state.range;
    localStorage.setItem(STORE_KEY, JSON.stringify({ range, start: state.start, end: state.end, view: state.view }));
  } catch {
    // Private mode: the URL still carries the state.
  }
}

/** Query parameters for a history or charts request of this state. */
export function rangeParams(state) {
  return state.range === 'custom' ? { start: state.start, end: state.end } : { range: state.range };
}

/** [start, end] in Unix ms for this state as of `now`. */
export function rangeBounds(state, now = Date.now()) {
  if (state.range === 'custom') return [state.start, state.end];
  return [now - rangeSeconds(state.range) * 1000, now];
}

/** Auto-refresh period in ms for a state, or 0 for none. */
export function refreshPeriod(state, now = Date.now()) {
  let seconds;
  let live = true;
  if (state.range === 'custom') {
    seconds = (state.end - state.start) / 1000;
    live = now - state.end < 60_000;
  } else {
    seconds = rangeSeconds(state.range);
  }
  if (!live) return 0;
  if (seconds <= 3600) return 10_000;
  if (seconds <= 86400) return 30_000;
  return 0;
}
