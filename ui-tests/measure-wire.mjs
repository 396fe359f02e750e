// Bytes on the wire for the dashboard, with the data shape of issue 12: 85
// resources x 3 metrics (255 series) of 7-day history (a point a minute,
// every 10 s for the last 2 hours), ingested with `pulse-metrics ingest`,
// then new points every 10 s as collectors would write them.
//
//   PULSE_METRICS_BIN=target/release/pulse-metrics node ui-tests/measure-wire.mjs [minutes]
//
// Prints the size of `/api/charts?range=24h&maxPoints=120` (plain, gzip,
// br) and what an open 1h tab moves: the dashboard runs in Chromium for
// `minutes` (default 3) and every /api/charts answer is counted as
// received (encoded) bytes; an hour is 6 full answers (one every 10
// minutes) and 354 refreshes.

import { spawn, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, '..');
const BIN = process.env.PULSE_METRICS_BIN || path.join(repo, 'target', 'debug', 'pulse-metrics');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const MINUTES = Number(process.argv[2] || 3);
const METRICS = ['cpu', 'memory', 'disk'];

function resources() {
  const out = [];
  for (let n = 1; n <= 3; n++) out.push(['node', `pve1:node${n}`]);
  for (let v = 0; v < 50; v++) out.push(['vm', `pve1:node${(v % 3) + 1}:${100 + v}`]);
  for (let c = 0; c < 22; c++) out.push(['container', `pve1:node${(c % 3) + 1}:${200 + c}`]);
  for (let s = 0; s < 10; s++) out.push(['storage', `pve1:node${(s % 3) + 1}:store${s}`]);
  return out;
}

/** A value with some drift and noise, as real usage has. */
function value(r, m, t) {
  const base = 10 + ((r * 37 + m * 11) % 70);
  return Math.max(0, Math.min(100, base + 8 * Math.sin(t / 5.4e6 + r) + 3 * Math.sin(t / 4.1e5 + m) + Math.random() * 2));
}

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pulse-metrics-wire-'));
const db = path.join(dir, 'metrics.db');
const now = Date.now();
const res = resources();
console.log(`writing 7 days of ${res.length * METRICS.length} series to ${dir}/week.csv`);
const csv = fs.openSync(path.join(dir, 'week.csv'), 'w');
fs.writeSync(csv, 'resourceType,resourceId,metric,value,timestamp\n');
res.forEach(([type, id], r) => {
  METRICS.forEach((metric, m) => {
    const lines = [];
    for (let t = now - 7 * 86_400_000; t <= now; t += t < now - 2 * 3600_000 ? 60_000 : 10_000) {
      lines.push(`${type},${id},${metric},${value(r, m, t).toFixed(2)},${Math.floor(t / 1000) * 1000}`);
    }
    fs.writeSync(csv, lines.join('\n') + '\n');
  });
});
fs.closeSync(csv);
const t0 = Date.now();
const ingested = execFileSync(BIN, ['--db', db, 'ingest', '--now', String(now), path.join(dir, 'week.csv')], { encoding: 'utf8' });
console.log(`ingest: ${ingested.trim()} in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
fs.rmSync(path.join(dir, 'week.csv'));

const config = path.join(dir, 'config.yaml');
fs.writeFileSync(config, `metrics:\n  database_path: "${db}"\ncollectors:\n  host: { enabled: false }\n`);
const child = spawn(BIN, ['--config', config, 'serve', '--listen', '127.0.0.1:0'], { env: { ...process.env, PULSE_DATA_DIR: dir, RUST_LOG: 'warn' }, stdio: ['ignore', 'ignore', 'pipe'] });
const url = await new Promise((resolve, reject) => {
  let log = '';
  child.stderr.on('data', (c) => {
    log += c;
    const m = /listening on (http:\/\/\S+)\n/.exec(log);
    if (m) resolve(m[1]);
  });
  child.on('exit', () => reject(new Error(log)));
});

// Node's fetch always decompresses; measure the encodings with curl.
const curl = (p, enc) =>
  Number(execFileSync('curl', ['-s', '-o', '/dev/null', '-w', '%{size_download}', '-H', `Accept-Encoding: ${enc}`, url + p], { encoding: 'utf8' }));
const charts24 = '/api/charts?range=24h&maxPoints=120';
const sizes = { plain: curl(charts24, 'identity'), gzip: curl(charts24, 'gzip'), br: curl(charts24, 'br') };
console.log(`${charts24}: plain ${(sizes.plain / 1024).toFixed(0)} KiB, gzip ${(sizes.gzip / 1024).toFixed(1)} KiB, br ${(sizes.br / 1024).toFixed(1)} KiB`);

// Collectors: a point per series every 10 s.
const writer = setInterval(async () => {
  const t = Date.now();
  const points = [];
  res.forEach(([type, id], r) => METRICS.forEach((metric, m) => points.push({ resourceType: type, resourceId: id, metric, value: Number(value(r, m, t).toFixed(2)), timestamp: t })));
  await fetch(`${url}/api/metrics-store/write`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ points }) });
}, 10_000);

const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'pulse-metrics-wire-chromium-'));
const browser = await chromium.launchPersistentContext(userDataDir, {
  executablePath: CHROMIUM,
  headless: true,
  viewport: { width: 1440, height: 900 },
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
});
const page = browser.pages()[0] || (await browser.newPage());
const cdp = await page.context().newCDPSession(page);
await cdp.send('Network.enable');
const requests = new Map();
const answers = [];
cdp.on('Network.requestWillBeSent', (e) => requests.set(e.requestId, e.request.url));
cdp.on('Network.loadingFinished', (e) => {
  const u = requests.get(e.requestId);
  if (u && u.includes('/api/charts')) answers.push({ full: u.includes('range='), bytes: e.encodedDataLength });
});
await page.goto(`${url}/?range=1h&view=trends`);
console.log(`watching an open 1h tab for ${MINUTES} minute(s)...`);
await new Promise((r) => setTimeout(r, MINUTES * 60_000));
clearInterval(writer);
const full = answers.filter((a) => a.full);
const inc = answers.filter((a) => !a.full);
const avg = (list) => list.reduce((n, a) => n + a.bytes, 0) / Math.max(1, list.length);
const perHour = 6 * avg(full) + 354 * avg(inc);
console.log(
  `1h tab: full answer ${(avg(full) / 1024).toFixed(1)} KiB (x${full.length}), refresh ${(avg(inc) / 1024).toFixed(2)} KiB (x${inc.length}); ` +
    `an hour: ${(perHour / 1e6).toFixed(2)} MB (6 full answers + 354 refreshes, with headers)`,
);
await browser.close();
child.kill('SIGTERM');
fs.rmSync(userDataDir, { recursive: true, force: true });
if (process.env.KEEP !== '1') fs.rmSync(dir, { recursive: true, force: true });
