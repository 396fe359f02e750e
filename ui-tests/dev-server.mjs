// A stand-in for the service, for working on the UI without building Rust:
// serves ../ui from disk and answers the HTTP API of the contract from memory
// with generated data. Not used by the tests (they run the real binary).
//
//   node ui-tests/dev-server.mjs [port]   # then open http://127.0.0.1:PORT/

import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { RESOURCES, generate } from './data.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', 'ui');
const port = Number(process.argv[2] || 7699);
const token = process.env.API_TOKEN || '';
const now0 = Date.now();
const series = new Map(); // key -> [{timestamp, value}]
for (const p of generate(now0)) {
  const k = `${p.resourceType}\u0000${p.resourceId}\u0000${p.metric}`;
  if (!series.has(k)) series.set(k, []);
  series.get(k).push({ timestamp: p.timestamp, value: p.value });
}
for (const pts of series.values()) pts.sort((a, b) => a.timestamp - b.timestamp);
let config = {
  enabled: true,
  database_path: '/tmp/dev/metrics.db',
  retention: { raw: '2h', minute: '24h', hourly: '168h', daily: '2160h' },
  write_buffer: 100,
  flush_interval: '5s',
  rollup_interval: '5m',
  retention_interval: '1h',
  vacuum_interval: '168h',
};
const UNITS = { s: 1, m: 60, h: 3600, d: 86400 };
const dur = (s) => {
  const m = /^(\d+)(s|m|h|d)$/.exec(String(s));
  return m ? Number(m[1]) * UNITS[m[2]] : null;
};
const RANGES = ['5m', '15m', '30m', '1h', '4h', '8h', '12h', '24h', '7d', '30d', '90d'];

function reduce(points, start, end, maxPoints) {
  const inRange = points.filter((p) => p.timestamp >= start && p.timestamp <= end);
  if (!maxPoints || inRange.length <= maxPoints) return inRange.map((p) => ({ min: p.value, max: p.value, count: 1, ...p }));
  const width = (end - start) / maxPoints;
  const buckets = new Map();
  for (const p of inRange) {
    const b = Math.min(maxPoints - 1, Math.floor((p.timestamp - start) / width));
    const cur = buckets.get(b) || { timestamp: Math.round(start + b * width), sum: 0, min: Infinity, max: -Infinity, count: 0 };
    const c = p.count ?? 1;
    cur.sum += p.value * c;
    cur.min = Math.min(cur.min, p.min ?? p.value);
    cur.max = Math.max(cur.max, p.max ?? p.value);
    cur.count += c;
    buckets.set(b, cur);
  }
  return [...buckets.values()]
    .sort((a, b) => a.timestamp - b.timestamp)
    .map((b) => ({ timestamp: b.timestamp, value: b.sum / b.count, min: b.min, max: b.max, count: b.count }));
}

function window(q) {
  const now = Date.now();
  if (q.has('start') || q.has('end')) return { start: Number(q.get('start')), end: Number(q.get('end')), range: null };
  const r = q.get('range') || '1h';
  return { start: now - dur(r) * 1000, end: now, range: r };
}

const tierFor = (seconds) => (seconds <= 7200 ? 'raw' : seconds <= 86400 ? 'minute' : seconds <= 7 * 86400 ? 'hourly' : 'daily');

/**
 * The page of resources a request asks for (`type`, `search`, `limit`,
 * `offset`; `sort` is not imitated: always by name), in the service's
 * order: by type, then name, then id.
 */
const TYPE_ORDER = ['node', 'vm', 'container', 'storage', 'dockerHost', 'dockerContainer'];
const collator = new Intl.Collator(undefined, { numeric: true, sensitivity: 'base' });
const META = new Map(RESOURCES.filter((r) => r.meta).map((r) => [`${r.type}\u0000${r.id}`, { instance: 'pve1', ...r.meta }]));
function listing(q) {
  const byKey = new Map();
  for (const k of series.keys()) {
    const [type, id, metric] = k.split('\u0000');
    const key = `${type}\u0000${id}`;
    if (!byKey.has(key)) byKey.set(key, { type, id, meta: META.get(key), metrics: new Set() });
    byKey.get(key).metrics.add(metric);
  }
  const types = q.get('type') ? new Set(q.get('type').split(',')) : null;
  const search = (q.get('search') || '').trim().toLowerCase();
  const name = (r) => r.meta?.name || r.id.slice(r.id.lastIndexOf(':') + 1);
  const rank = (t) => (TYPE_ORDER.includes(t) ? TYPE_ORDER.indexOf(t) : 99);
  const rows = [...byKey.values()]
    .filter((r) => !types || types.has(r.type))
    .sort((a, b) => rank(a.type) - rank(b.type) || a.type.localeCompare(b.type) || collator.compare(name(a), name(b)) || collator.compare(a.id, b.id));
  const columns = new Map();
  for (const r of rows) for (const m of r.metrics) (columns.get(r.type) ?? columns.set(r.type, new Set()).get(r.type)).add(m);
  const found = rows.filter((r) => !search || [r.id, r.meta?.name, r.meta?.node, r.meta?.instance, ...(r.meta?.tags || [])].some((f) => f && f.toLowerCase().includes(search)));
  const groups = [];
  for (const r of found) {
    if (groups.at(-1)?.resourceType !== r.type) groups.push({ resourceType: r.type, start: found.indexOf(r), total: 0, metrics: [...columns.get(r.type)] });
    groups.at(-1).total++;
  }
  const offset = Math.min(found.length, Number(q.get('offset')) || 0);
  const limit = q.has('limit') ? Number(q.get('limit')) : null;
  const rowsOfPage = found.slice(offset, limit == null ? undefined : offset + limit);
  return {
    ids: new Set(rowsOfPage.map((r) => `${r.type}\u0000${r.id}`)),
    meta: rowsOfPage,
    json: { total: found.length, offset, limit, items: rowsOfPage.map((r) => ({ resourceType: r.type, resourceId: r.id })), groups },
  };
}

function json(res, status, body) {
  res.writeHead(status, { 'Content-Type': 'application/json' });
  res.end(JSON.stringify(body));
}

function api(req, res, url, body) {
  const q = url.searchParams;
  if (token && req.headers.authorization !== `Bearer ${token}`) return json(res, 401, { error: 'unauthorized', details: [] });
  if (url.pathname === '/api/charts') {
    if (q.has('range') && !RANGES.includes(q.get('range'))) return json(res, 400, { error: 'invalid range', details: [`unknown range ${q.get('range')}`] });
    const { start, end, range } = window(q);
    const out = { data: {}, nodeData: {}, storageData: {}, dockerData: {}, dockerHostData: {}, resources: {}, guestTypes: {}, meta: {} };
    const page = listing(q);
    out.page = page.json;
    let pointCount = 0;
    let oldest = Infinity;
    for (const [k, pts] of series) {
      const [type, id, metric] = k.split('\u0000');
      oldest = Math.min(oldest, pts[0].timestamp);
      if (!page.ids.has(`${type}\u0000${id}`)) continue;
      const r = reduce(pts, start, end, Number(q.get('maxPoints')) || 0).map(({ timestamp, value }) => ({ timestamp, value }));
      if (!r.length) continue;
      pointCount += r.length;
      const target =
        type === 'vm' || type === 'container'
          ? out.data
          : type === 'node'
            ? out.nodeData
            : type === 'storage'
              ? out.storageData
              : type === 'dockerContainer'
                ? out.dockerData
                : type === 'dockerHost'
                  ? out.dockerHostData
                  : (out.resources[type] ??= {});
      (target[id] ??= {})[metric] = r;
      if (type === 'vm' || type === 'container') out.guestTypes[id] = type;
    }
    for (const r of page.meta) if (r.meta) (out.meta[r.type] ??= {})[r.id] = r.meta;
    out.timestamp = Date.now();
    out.stats = { oldestDataTimestamp: oldest === Infinity ? 0 : oldest, tier: tierFor((end - start) / 1000), pointCount, range: range || 'custom', rangeSeconds: (end - start) / 1000 };
    return json(res, 200, out);
  }
  if (url.pathname === '/api/metrics-store/history') {
    const { start, end, range } = window(q);
    const k = `${q.get('resourceType')}\u0000${q.get('resourceId')}\u0000${q.get('metric')}`;
    let pts = series.get(k) || [];
    const tier = tierFor((end - start) / 1000);
    if (tier !== 'raw') {
      // Minute buckets, as the real store answers past the raw retention.
      pts = reduce(pts, Math.floor(start / 60_000) * 60_000, end, Math.ceil((end - start) / 60_000));
    }
    const merged = reduce(pts, start, end, Number(q.get('maxPoints')) || 0);
    return json(res, 200, {
      resourceType: q.get('resourceType'),
      resourceId: q.get('resourceId'),
      metric: q.get('metric'),
      range,
      start,
      end,
      tier,
      points: merged,
    });
  }
  if (url.pathname === '/api/metrics-store/stats') {
    let raw = 0;
    let oldest = Infinity;
    for (const pts of series.values()) {
      raw += pts.length;
      oldest = Math.min(oldest, pts[0].timestamp);
    }
    return json(res, 200, {
      enabled: true, dbPath: config.database_path, dbSize: 3_457_024, walSize: 412_000, freePages: 12, seriesCount: series.size,
      rawCount: raw, lateCount: 0, minuteCount: raw / 12, hourlyCount: raw / 720, dailyCount: 0, oldestDataTimestamp: oldest, totalWrites: raw,
      droppedWrites: 0, bufferSize: 3, lastFlush: Date.now() - 2000, lastRollup: Date.now() - 60_000, lastRetention: Date.now() - 600_000,
      lastVacuum: 0, lastError: '',
      collectors: [{ name: 'host', state: 'running', lastSuccess: Date.now() - 3000, lastAttempt: Date.now() - 3000, lastError: '', consecutiveFailures: 0, pointsWritten: 1234 }],
    });
  }
  if (url.pathname === '/api/metrics-store/config') {
    if (req.method === 'GET') return json(res, 200, config);
    let patch;
    try {
      patch = JSON.parse(body);
    } catch {
      return json(res, 400, { error: 'invalid JSON', details: [] });
    }
    const next = { ...config, ...patch, retention: { ...config.retention, ...(patch.retention || {}) } };
    const details = [];
    for (const k of ['raw', 'minute', 'hourly', 'daily']) if (dur(next.retention[k]) == null) details.push({ key: `metrics.retention.${k}`, error: `invalid duration "${next.retention[k]}"` });
    if (!details.length && dur(next.retention.raw) < 2 * dur(next.rollup_interval)) details.push({ key: 'metrics.retention.raw', error: 'must be at least twice rollup_interval' });
    if (details.length) return json(res, 400, { error: 'invalid configuration', details });
    config = next;
    return json(res, 200, { ...config, restartRequired: [], persisted: true });
  }
  if (url.pathname === '/api/metrics-store/maintenance') {
    return json(res, 200, { rollup: { now: Date.now(), minuteBuckets: 120, hourlyBuckets: 2, dailyBuckets: 0, durationMs: 3.2 }, prune: { now: Date.now(), rawPoints: 0, minuteBuckets: 0, hourlyBuckets: 0, dailyBuckets: 0, durationMs: 0.4 }, reclaim: { bytesFreed: 0, freePages: 12, durationMs: 0.1 } });
  }
  return json(res, 404, { error: 'not found', details: [] });
}

http
  .createServer((req, res) => {
    const url = new URL(req.url, 'http://x');
    let body = '';
    req.on('data', (c) => (body += c));
    req.on('end', () => {
      if (url.pathname.startsWith('/api/')) return api(req, res, url, body);
      const file = path.join(root, url.pathname === '/' ? 'index.html' : url.pathname);
      if (!file.startsWith(root) || !fs.existsSync(file) || fs.statSync(file).isDirectory()) {
        res.writeHead(404);
        return res.end('not found');
      }
      const type = { '.html': 'text/html', '.js': 'text/javascript', '.css': 'text/css' }[path.extname(file)] || 'application/octet-stream';
      res.writeHead(200, { 'Content-Type': `${type}; charset=utf-8`, 'Cache-Control': 'no-cache' });
      fs.createReadStream(file).pipe(res);
    });
  })
  .listen(port, '127.0.0.1', () => console.error(`listening on http://127.0.0.1:${port}`));
