// Browser tests of the web UI, against the real binary on a temporary
// database with ingested data, in headless Chromium (Debian's /usr/bin/chromium
// driven by playwright-core; no browser is downloaded).
//
//   PULSE_METRICS_BIN=target/debug/pulse-metrics node ui-tests/run.mjs
//
// Environment: PULSE_METRICS_BIN (default ../target/debug/pulse-metrics),
// CHROMIUM (default /usr/bin/chromium), UI_SCREENSHOTS (default
// ../target/ui-screenshots). A missing binary or browser is a failure.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { GAP, RESOURCES, generate } from './data.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, '..');
const BIN = process.env.PULSE_METRICS_BIN || path.join(repo, 'target', 'debug', 'pulse-metrics');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const SHOTS = process.env.UI_SCREENSHOTS || path.join(repo, 'target', 'ui-screenshots');
const VIEWPORT = { width: 1600, height: 1000 };
const TOKEN = 'ui-test-token-7f3a';

// ---------------------------------------------------------------- helpers

/** Starts `pulse-metrics --config FILE serve --listen 127.0.0.1:0` and waits for its address. */
async function startServer(name, yaml) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `pulse-metrics-ui-${name}-`));
  const config = path.join(dir, 'config.yaml');
  fs.writeFileSync(config, yaml(dir));
  const child = spawn(BIN, ['--config', config, 'serve', '--listen', '127.0.0.1:0'], {
    cwd: dir,
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'warn', PULSE_DATA_DIR: dir },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let log = '';
  const url = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${name}: no "listening on" line within 30 s. Output:\n${log}`)), 30_000);
    const onData = (chunk) => {
      log += chunk;
      // Only a whole line: a chunk may end in the middle of the port number.
      const m = /listening on (http:\/\/[^\s]+)\r?\n/.exec(log);
      if (m) {
        clearTimeout(timer);
        resolve(m[1].replace(/\/$/, ''));
      }
    };
    child.stderr.on('data', onData);
    child.stdout.on('data', onData);
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`${name}: the service exited (${code ?? signal}) before listening. Output:\n${log}`));
    });
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(new Error(`${name}: cannot start ${BIN}: ${e.message}`));
    });
  });
  child.removeAllListeners('exit');
  child.stderr.on('data', (c) => (log += c));
  child.stdout.on('data', (c) => (log += c));
  return {
    url,
    dir,
    config,
    child,
    log: () => log,
    async stop() {
      if (child.exitCode != null) return;
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      const timeout = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(timeout);
    },
  };
}

async function call(server, method, p, body, headers = {}) {
  const response = await fetch(server.url + p, {
    method,
    headers: { 'Content-Type': 'application/json', ...headers },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  let json = null;
  try {
    json = JSON.parse(text);
  } catch {
    // not JSON
  }
  return { status: response.status, json, text };
}

async function ingest(server, points) {
  for (let i = 0; i < points.length; i += 4000) {
    const batch = points.slice(i, i + 4000);
    for (let attempt = 0; ; attempt++) {
      const r = await call(server, 'POST', '/api/metrics-store/write?sync=true', { points: batch });
      if (r.status === 503 && attempt < 20) {
        await new Promise((res) => setTimeout(res, 250));
        continue;
      }
      assert.equal(r.status, 200, `write failed: ${r.status} ${r.text}`);
      assert.equal(r.json.accepted, batch.length);
      break;
    }
  }
}

let shotCount = 0;
async function shot(page, name, options = {}) {
  fs.mkdirSync(SHOTS, { recursive: true });
  const file = path.join(SHOTS, `${String(++shotCount).padStart(2, '0')}-${name}.png`);
  await page.screenshot({ path: file, ...options });
  console.log(`  screenshot: ${path.relative(repo, file)}`);
  return file;
}

/** Waits for the dashboard to have rendered an answer of /api/charts. */
async function dashboardReady(page) {
  await page.waitForSelector('#groups[aria-busy="false"][data-state]', { timeout: 15_000 });
}

/** Counts the non-transparent pixels a canvas has drawn. */
function inkOf(page, selector) {
  return page.$eval(selector, (c) => {
    const data = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    let n = 0;
    for (let i = 3; i < data.length; i += 4) if (data[i] > 0) n++;
    return n;
  });
}

// ---------------------------------------------------------------- setup

let server;
let browser;
let page;
let points;
const dataDirs = [];

before(async () => {
  fs.mkdirSync(SHOTS, { recursive: true });
  for (const f of fs.readdirSync(SHOTS)) if (f.endsWith('.png')) fs.rmSync(path.join(SHOTS, f));
  assert.ok(fs.existsSync(BIN), `the pulse-metrics binary is missing at ${BIN}: run cargo build`);
  assert.ok(fs.existsSync(CHROMIUM), `Chromium is missing at ${CHROMIUM}: apt-get install chromium chromium-driver`);
  server = await startServer(
    'main',
    (dir) => `# ui-tests: temporary configuration
metrics:
  enabled: true
  database_path: "${dir}/metrics.db"
  flush_interval: 1s
collectors:
  host:
    enabled: false
  proxmox:
    enabled: false
`,
  );
  dataDirs.push(server.dir);
  points = generate(Date.now());
  await ingest(server, points);
  const m = await call(server, 'POST', '/api/metrics-store/maintenance');
  assert.equal(m.status, 200, `maintenance failed: ${m.text}`);

  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'pulse-metrics-ui-chromium-'));
  dataDirs.push(userDataDir);
  browser = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: VIEWPORT,
    colorScheme: 'dark',
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
  page = browser.pages()[0] || (await browser.newPage());
  page.on('pageerror', (e) => console.log(`  page error: ${e.message}`));
});

after(async () => {
  await browser?.close().catch(() => {});
  await server?.stop();
  if (process.env.UI_TESTS_KEEP !== '1') for (const d of dataDirs) fs.rmSync(d, { recursive: true, force: true });
});

// ---------------------------------------------------------------- tests

test('the dashboard draws a sparkline for each series, coloured by thresholds', async () => {
  const series = (await call(server, 'GET', '/api/metrics-store/series')).json.series;
  const expected = RESOURCES.reduce((n, r) => n + r.metrics.length, 0);
  assert.equal(series.length, expected, 'every ingested series is stored');

  await page.goto(`${server.url}/?range=1h&view=trends`);
  await dashboardReady(page);
  assert.equal(await page.getAttribute('#groups', 'data-state'), 'data');

  // Groups by type, in order, with every resource once.
  const groups = await page.$$eval('#groups section.group', (els) =>
    els.map((el) => ({ type: el.dataset.group, title: el.querySelector('h2 .title').textContent, rows: el.querySelectorAll('tbody tr').length })),
  );
  assert.deepEqual(
    groups.map((g) => g.type),
    ['node', 'vm', 'container', 'storage', 'dockerHost', 'pbs'],
  );
  assert.equal(groups.find((g) => g.type === 'vm').title, 'Virtual machines');
  assert.equal(groups.find((g) => g.type === 'pbs').title, 'Other: pbs');
  assert.equal(
    groups.reduce((n, g) => n + g.rows, 0),
    RESOURCES.length,
  );

  // Every series has a drawn sparkline with ink on it (scrolled into view: drawing is lazy).
  for (const s of series) {
    const sel = `tr[data-type="${s.resourceType}"][data-id="${s.resourceId}"] canvas.spark[data-metric="${s.metric}"]`;
    await page.$eval(sel, (c) => c.scrollIntoView({ block: 'center' }));
    await page.waitForSelector(`${sel}[data-drawn]`, { timeout: 5_000 });
    const pointsDrawn = Number(await page.getAttribute(sel, 'data-points'));
    assert.ok(pointsDrawn > 10 && pointsDrawn <= 120, `${sel}: ${pointsDrawn} points`);
    const ink = await inkOf(page, sel);
    assert.ok(ink > 50, `${sel} has a visible line (${ink} px)`);
  }
  await page.evaluate(() => window.scrollTo(0, 0));

  // Canvases are 120x16 CSS px, sharp on this screen.
  const size = await page.$eval('canvas.spark', (c) => ({ w: c.getBoundingClientRect().width, h: c.getBoundingClientRect().height, pw: c.width, dpr: devicePixelRatio }));
  assert.deepEqual([size.w, size.h], [120, 16]);
  assert.equal(size.pw, Math.round(120 * size.dpr));

  // Threshold colours as Pulse: VM 104 cpu ~93 % is critical, VM 105 memory ~79 % a warning.
  const cell = (id, metric) => `tr[data-id="${id}"] td[data-metric="${metric}"]`;
  assert.match(await page.getAttribute(cell('pve1:node1:104', 'cpu'), 'class'), /lvl-crit/);
  assert.match(await page.getAttribute(cell('pve1:node2:105', 'memory'), 'class'), /lvl-warn/);
  assert.match(await page.getAttribute(cell('pve1:node1', 'cpu'), 'class'), /lvl-ok/);
  const critColour = await page.$eval(`${cell('pve1:node1:104', 'cpu')} .val`, (e) => getComputedStyle(e).color);
  const okColour = await page.$eval(`${cell('pve1:node1', 'cpu')} .val`, (e) => getComputedStyle(e).color);
  assert.notEqual(critColour, okColour);
  // Current values with units.
  assert.match(await page.textContent(`${cell('pve1:node1:104', 'cpu')} .val`), /^\d+(\.\d)?%$/);
  assert.match(await page.textContent(`${cell('pve1:node1:101', 'netin')} .val`), /^[\d.,]+ (B|KiB|MiB)\/s$/);

  // The stopped VM's line breaks over its downtime.
  const gapRuns = Number(await page.getAttribute(`tr[data-id="${GAP.id}"] canvas.spark[data-metric="cpu"]`, 'data-runs'));
  assert.ok(gapRuns >= 2, `VM ${GAP.id} cpu sparkline has a break (runs: ${gapRuns})`);
  const steadyRuns = Number(await page.getAttribute(`tr[data-id="pve1:node1:104"] canvas.spark[data-metric="cpu"]`, 'data-runs'));
  assert.equal(steadyRuns, 1, 'a VM that never stopped is one line');

  assert.equal(await page.isVisible('#notice'), false, '1h is covered by the data: no notice');
  await shot(page, 'dashboard-trends');
  await shot(page, 'dashboard-trends-full', { fullPage: true });

  // 4h reaches before the first data (3 h ago): the page says so.
  await page.click('#ranges button[data-range="4h"]');
  await page.waitForSelector('#notice:not([hidden])');
  assert.match(await page.textContent('#notice'), /Collecting history since .*the 4h range reaches before the first data/);
  await shot(page, 'dashboard-trends-4h');
});

test('changing the range issues the right /api/charts request and redraws; choices survive a reload', async () => {
  await page.goto(`${server.url}/?range=1h&view=trends`);
  await dashboardReady(page);
  const sel = 'tr[data-id="pve1:node1:104"] canvas.spark[data-metric="cpu"]';
  // Sparklines are drawn as they come into view, just after the answer renders.
  await page.$eval(sel, (c) => c.scrollIntoView({ block: 'center' }));
  await page.waitForSelector(`${sel}[data-drawn]`, { timeout: 5_000 });
  const drawnBefore = Number(await page.getAttribute(sel, 'data-drawn'));
  const pointsBefore = Number(await page.getAttribute(sel, 'data-points'));
  assert.ok(pointsBefore > 0);
  assert.equal(await page.isVisible('#notice'), false, '1h is covered by the data: no notice');

  const [request] = await Promise.all([
    page.waitForRequest((r) => r.url().includes('/api/charts'), { timeout: 10_000 }),
    page.click('#ranges button[data-range="24h"]'),
  ]);
  const q = new URL(request.url()).searchParams;
  assert.equal(q.get('range'), '24h');
  assert.equal(q.get('maxPoints'), '120');
  const response = await request.response();
  assert.equal(response.status(), 200);
  await page.waitForFunction((s) => Number(document.querySelector(s)?.dataset.drawn) > 0 && document.querySelector('#groups').getAttribute('aria-busy') === 'false', sel);
  await page.waitForFunction(([s, before]) => Number(document.querySelector(s).dataset.drawn) > before, [sel, drawnBefore]);
  assert.equal(await page.getAttribute('#ranges button[data-range="24h"]', 'aria-pressed'), 'true');
  assert.equal(new URL(page.url()).searchParams.get('range'), '24h');
  // Over 24h the 3 h of data occupy the right eighth of the sparkline (an hourly bucket may lead by < 1 h).
  const span = await page.$eval(sel, (c) => {
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    let first = c.width;
    for (let x = 0; x < c.width; x++) {
      for (let y = 0; y < c.height - 2 * devicePixelRatio; y++) if (d[(y * c.width + x) * 4 + 3] > 0) first = Math.min(first, x);
    }
    return first / c.width;
  });
  assert.ok(span > 0.75, `the line starts at ${Math.round(span * 100)} % of the width for 24h`);
  assert.match(await page.textContent('#notice'), /24h range reaches before the first data/);

  // Bars view, then a reload keeps both choices.
  await page.click('button[data-view="bars"]');
  await page.waitForSelector('td[data-metric="cpu"] .bar .fill');
  assert.equal(await page.$$eval('canvas.spark', (c) => c.length), 0, 'Bars view shows no sparklines');
  const width = await page.$eval('tr[data-id="pve1:node1:104"] td[data-metric="cpu"] .fill', (e) => parseFloat(e.style.width));
  assert.ok(width > 80 && width <= 100, `the 104 cpu bar is ${width} % full`);
  await shot(page, 'dashboard-bars');
  await page.goto(`${server.url}/`);
  await dashboardReady(page);
  assert.equal(await page.getAttribute('#ranges button[data-range="24h"]', 'aria-pressed'), 'true', 'range survives a reload');
  assert.equal(await page.getAttribute('button[data-view="bars"]', 'aria-pressed'), 'true', 'view survives a reload');

  // A custom window is sent as start/end.
  await page.click('button[data-view="trends"]');
  await page.click('#ranges button[data-range="custom"]');
  const end = Date.now() - 30 * 60_000;
  const start = end - 90 * 60_000;
  const local = (ms) => {
    const d = new Date(ms);
    const p = (n) => String(n).padStart(2, '0');
    return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}`;
  };
  await page.fill('#custom-range input[name="start"]', local(start));
  await page.fill('#custom-range input[name="end"]', local(end));
  const [custom] = await Promise.all([
    page.waitForRequest((r) => r.url().includes('/api/charts') && r.url().includes('start='), { timeout: 10_000 }),
    page.click('#custom-range button[type="submit"]'),
  ]);
  const cq = new URL(custom.url()).searchParams;
  assert.equal(cq.get('range'), null);
  assert.ok(Math.abs(Number(cq.get('start')) - start) < 60_000, 'start sent in Unix ms');
  assert.ok(Math.abs(Number(cq.get('end')) - end) < 60_000, 'end sent in Unix ms');
  await dashboardReady(page);
  assert.equal(await page.getAttribute('#groups', 'data-state'), 'data');
  await shot(page, 'dashboard-custom-range');

  // Back to a short range for the next tests.
  await page.click('#ranges button[data-range="4h"]');
  await dashboardReady(page);
});

test('the detail chart shows the mean with its min-max band, a tooltip and the gap', async () => {
  await page.goto(`${server.url}/?range=4h&view=trends`);
  await dashboardReady(page);
  const [request] = await Promise.all([
    page.waitForRequest((r) => r.url().includes('/api/metrics-store/history'), { timeout: 10_000 }),
    page.click('tr[data-id="pve1:node1:104"] td[data-metric="cpu"] button.cell'),
  ]);
  const q = new URL(request.url()).searchParams;
  assert.equal(q.get('resourceType'), 'vm');
  assert.equal(q.get('resourceId'), 'pve1:node1:104');
  assert.equal(q.get('metric'), 'cpu');
  assert.equal(q.get('range'), '4h');
  assert.ok(Number(q.get('maxPoints')) > 100);
  await page.waitForSelector('#detail[open] .detail-chart[data-state="ready"] canvas', { timeout: 10_000 });
  assert.equal(await page.textContent('#detail-title'), '104');

  // Rolled-up buckets carry min < max: the band is drawn.
  const band = Number(await page.getAttribute('.detail-chart', 'data-band'));
  assert.ok(band > 10, `${band} buckets have a min-max spread`);
  const tier = await page.getAttribute('.detail-chart', 'data-tier');
  assert.ok(['raw', 'minute', 'hourly', 'daily'].includes(tier), `tier ${tier}`);

  // The band's translucent fill is on the canvas: pixels of partial alpha
  // between the line and the axis that a line alone would not make.
  const translucent = await page.$eval('.detail-chart canvas', (c) => {
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    let n = 0;
    for (let i = 3; i < d.length; i += 4) if (d[i] > 30 && d[i] < 120 && d[i - 1] - d[i - 3] > 100) n++;
    return n;
  });
  assert.ok(translucent > 500, `band fill pixels: ${translucent}`);

  // Hovering shows time, mean, min, max, count and tier.
  const box = await page.$eval('.detail-chart .u-over', (e) => {
    const r = e.getBoundingClientRect();
    return { x: r.x, y: r.y, w: r.width, h: r.height };
  });
  let tip = null;
  for (const f of [0.7, 0.6, 0.8, 0.9, 0.5]) {
    await page.mouse.move(box.x + box.w * f, box.y + box.h / 2);
    if (await page.isVisible('.chart-tip')) {
      tip = await page.$$eval('.chart-tip .tip-row', (rows) => Object.fromEntries(rows.map((r) => [r.dataset.k, r.lastChild.textContent])));
      break;
    }
  }
  assert.ok(tip, 'a tooltip appears over the chart');
  for (const k of ['mean', 'min', 'max', 'count', 'tier']) assert.ok(tip[k], `tooltip has ${k}`);
  assert.equal(tip.tier, tier);
  const pct = (s) => parseFloat(s.replace(/[^\d.]/g, ''));
  assert.ok(pct(tip.min) <= pct(tip.mean) && pct(tip.mean) <= pct(tip.max), `min ${tip.min} <= mean ${tip.mean} <= max ${tip.max}`);
  assert.ok(Number(tip.count.replace(/\D/g, '')) >= 1);
  assert.match(await page.textContent('.chart-tip .tip-time'), /\d/);
  await shot(page, 'detail-band-tooltip');

  // Switching metric in the dialog reloads it.
  await Promise.all([
    page.waitForRequest((r) => r.url().includes('/api/metrics-store/history') && r.url().includes('metric=memory')),
    page.click('.metric-tabs button[data-metric="memory"]'),
  ]);
  await page.waitForSelector('.metric-tabs button[data-metric="memory"][aria-selected="true"]');
  await page.keyboard.press('Escape');
  await page.waitForFunction(() => !document.querySelector('#detail').open);

  // The stopped VM: a break where it had no data, not a straight line.
  await page.click(`tr[data-id="${GAP.id}"] td[data-metric="cpu"] button.cell`);
  await page.waitForFunction(() => {
    const c = document.querySelector('#detail[open] .detail-chart');
    return c && c.dataset.state === 'ready' && c.querySelector('canvas');
  });
  const gaps = Number(await page.getAttribute('.detail-chart', 'data-gaps'));
  assert.ok(gaps >= 1, `the chart of ${GAP.id} has ${gaps} gap(s)`);
  // No ink in the middle of the downtime (x at its centre, the plot's full height).
  const gapInk = await page.evaluate((gap) => {
    const u = document.querySelector('.detail-chart .uplot');
    const canvas = u.querySelector('canvas');
    const plot = document.querySelector('.detail-chart')._plot;
    const mid = (Date.now() - (gap.from + gap.to) / 2) / 1000;
    const x = Math.round(plot.valToPos(mid, 'x', true));
    const d = canvas.getContext('2d').getImageData(x - 2, plot.bbox.top, 5, plot.bbox.height).data;
    let accent = 0;
    for (let i = 0; i < d.length; i += 4) if (d[i + 2] > 180 && d[i + 2] > d[i] + 60 && d[i + 3] > 200) accent++;
    return accent;
  }, GAP);
  assert.equal(gapInk, 0, 'nothing is drawn across the downtime');
  await shot(page, 'detail-gap');
  await page.keyboard.press('Escape');
});

test('saving a new raw retention writes the config file and survives a reload', async () => {
  await page.goto(`${server.url}/?range=4h#/settings`);
  await page.waitForFunction(() => document.querySelector('input[name="retention.raw"]')?.value === '2h');
  await page.waitForSelector('#health .kvi[data-k="series"]');
  // Storage health is filled from the stats.
  const stats = (await call(server, 'GET', '/api/metrics-store/stats')).json;
  assert.equal(await page.textContent('#health .kvi[data-k="series"] .v'), String(stats.seriesCount));
  assert.equal(await page.textContent('#health .kvi[data-k="late-points"] .v'), String(stats.lateCount));
  assert.match(await page.textContent('#health .kvi[data-k="database-file"] .v'), /metrics\.db$/);
  assert.notEqual(await page.textContent('#health .jobs .kvi[data-k="last-rollup"] .v'), 'never', 'the maintenance above rolled up');
  assert.match(await page.textContent('#estimate .big .v'), /≈ [\d.,]+ (KiB|MiB|GiB)/);
  // The raw interval of the estimate is measured on the data (a point every 15 s).
  await page.waitForFunction(() => /measured/.test(document.querySelector('#estimate .basis')?.textContent));
  assert.match(await page.textContent('#estimate .basis'), /For 104 series with a raw point every 15 s/);

  // Edit raw retention: the estimate follows the form.
  const before = Number(await page.getAttribute('#estimate .big', 'data-estimate-bytes'));
  await page.fill('input[name="retention.raw"]', '6h');
  const after6h = Number(await page.getAttribute('#estimate .big', 'data-estimate-bytes'));
  assert.ok(after6h > before, `estimate grows with raw retention (${before} -> ${after6h})`);
  await page.fill('input[name="retention.raw"]', '3h');
  const configBefore = fs.readFileSync(server.config, 'utf8');
  const [put] = await Promise.all([
    page.waitForResponse((r) => r.url().endsWith('/api/metrics-store/config') && r.request().method() === 'PUT'),
    page.click('#save'),
  ]);
  assert.equal(put.status(), 200, await put.text());
  assert.deepEqual(JSON.parse(put.request().postData()), { retention: { raw: '3h' } }, 'only the changed field is sent');
  await page.waitForSelector('#save-status.ok');
  assert.match(await page.textContent('#save-status'), /Saved/);
  const file = fs.readFileSync(server.config, 'utf8');
  assert.notEqual(file, configBefore, 'the config file changed');
  assert.match(file, /raw:\s*["']?3h/, `the config file has the new raw retention:\n${file}`);
  assert.equal((await call(server, 'GET', '/api/metrics-store/config')).json.retention.raw, '3h');
  await shot(page, 'settings-saved', { fullPage: true });

  await page.reload();
  await page.waitForFunction(() => document.querySelector('input[name="retention.raw"]')?.value === '3h');
  assert.equal(await page.inputValue('input[name="retention.minute"]'), '24h');
});

test('an invalid value shows its error next to the field and nothing is saved', async () => {
  await page.goto(`${server.url}/#/settings`);
  await page.waitForFunction(() => document.querySelector('input[name="retention.raw"]')?.value === '3h');
  const fileBefore = fs.readFileSync(server.config, 'utf8');
  const configBefore = (await call(server, 'GET', '/api/metrics-store/config')).json;

  // 1m is below the 2m floor and below twice the 5m rollup interval.
  await page.fill('input[name="retention.raw"]', '1m');
  const [put] = await Promise.all([
    page.waitForResponse((r) => r.url().endsWith('/api/metrics-store/config') && r.request().method() === 'PUT'),
    page.click('#save'),
  ]);
  assert.equal(put.status(), 400);
  const body = await put.json();
  const detail = body.details.find((d) => d.key === 'metrics.retention.raw');
  assert.ok(detail, `the API names the field: ${JSON.stringify(body)}`);
  const fieldError = '.field[data-key="retention.raw"] .error';
  await page.waitForSelector(fieldError, { state: 'visible' });
  assert.equal((await page.textContent(fieldError)).trim(), detail.error, 'the error is shown next to its field');
  assert.equal(await page.getAttribute('input[name="retention.raw"]', 'aria-invalid'), 'true');
  assert.ok(await page.isVisible('#banner'), 'the banner shows the error');
  assert.match(await page.textContent('#banner'), new RegExp(body.error.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')));
  assert.match(await page.textContent('#save-status'), /Not saved/);
  await shot(page, 'settings-invalid', { fullPage: true });

  assert.equal(fs.readFileSync(server.config, 'utf8'), fileBefore, 'the config file is unchanged');
  assert.deepEqual((await call(server, 'GET', '/api/metrics-store/config')).json, configBefore, 'the service config is unchanged');
  await page.reload();
  await page.waitForFunction(() => document.querySelector('input[name="retention.raw"]')?.value === '3h');
  assert.equal(await page.isVisible(fieldError), false);
});

test('run maintenance now reports what it did', async () => {
  await page.goto(`${server.url}/#/settings`);
  await page.waitForSelector('#health .kvi[data-k="series"]');
  const [post] = await Promise.all([
    page.waitForResponse((r) => r.url().endsWith('/api/metrics-store/maintenance')),
    page.click('#maintain'),
  ]);
  assert.equal(post.status(), 200);
  await page.waitForSelector('#maintain-result.ok');
  assert.match(await page.textContent('#maintain-result'), /^Maintenance done/);
});

test('API errors are shown in a banner, not swallowed', async () => {
  await page.route('**/api/charts?**', (route) =>
    route.fulfill({ status: 400, contentType: 'application/json', body: JSON.stringify({ error: 'invalid range', details: ['range must be one of 5m, 15m'] }) }),
  );
  try {
    await page.goto(`${server.url}/?range=1h`);
    await page.waitForSelector('#banner:not([hidden])');
    assert.match(await page.textContent('#banner .banner-title'), /invalid range/);
    assert.match(await page.textContent('#banner .banner-details'), /range must be one of/);
    await shot(page, 'error-banner');
  } finally {
    await page.unroute('**/api/charts?**');
  }
});

test('a phone-sized screen and the light theme stay usable', async () => {
  const phone = await browser.newPage();
  try {
    await phone.setViewportSize({ width: 390, height: 844 });
    await phone.emulateMedia({ colorScheme: 'light' });
    await phone.goto(`${server.url}/?range=1h&view=trends`);
    await dashboardReady(phone);
    const overflow = await phone.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 1, `the page itself does not scroll sideways (${overflow}px)`);
    const bg = await phone.evaluate(() => getComputedStyle(document.body).backgroundColor);
    assert.notEqual(bg, 'rgb(13, 17, 23)', 'light theme applied');
    await shot(phone, 'phone-light-dashboard');
    await phone.goto(`${server.url}/#/settings`);
    await phone.waitForSelector('#health .kvi[data-k="series"]');
    await shot(phone, 'phone-light-settings', { fullPage: true });
  } finally {
    await phone.close();
  }
});

test('hundreds of rows: one request, quick render, sparklines drawn as they scroll into view', async () => {
  const many = await startServer(
    'many',
    (dir) => `metrics:
  database_path: "${dir}/metrics.db"
collectors:
  host: { enabled: false }
  proxmox: { enabled: false }
`,
  );
  dataDirs.push(many.dir);
  const p = await browser.newPage();
  try {
    const now = Math.floor(Date.now() / 30_000) * 30_000;
    const bulk = [];
    const VMS = 400;
    for (let v = 0; v < VMS; v++) {
      for (const metric of ['cpu', 'memory', 'disk', 'netin']) {
        for (let i = 0; i < 40; i++) {
          const value = metric === 'netin' ? 1e5 * (1 + Math.sin(i / 5 + v)) : 50 + 40 * Math.sin(i / 7 + v);
          bulk.push({ resourceType: 'vm', resourceId: `pve2:n${v % 8}:${1000 + v}`, metric, value, timestamp: now - (39 - i) * 30_000 });
        }
      }
    }
    await ingest(many, bulk);
    const charts = [];
    p.on('request', (r) => r.url().includes('/api/charts') && charts.push(r.url()));
    await p.goto(`${many.url}/?range=1h&view=trends`);
    await dashboardReady(p);
    assert.equal(await p.$$eval('tbody tr', (rows) => rows.length), VMS);
    assert.equal(charts.length, 1, 'one /api/charts request draws every row');
    const renderMs = Number(await p.getAttribute('#groups', 'data-render-ms'));
    const drawMs = Number(await p.getAttribute('#groups', 'data-draw-ms'));
    console.log(`  ${VMS} rows x 4 metrics: render ${renderMs} ms, first sparklines ${drawMs} ms`);
    assert.ok(renderMs < 1000, `rendering ${VMS} rows took ${renderMs} ms`);
    assert.ok(drawMs < 500, `drawing the visible sparklines took ${drawMs} ms`);
    // Only what is on screen is drawn at first; the rest is drawn on scrolling.
    const drawnFirst = await p.$$eval('canvas.spark[data-drawn]', (c) => c.length);
    assert.ok(drawnFirst > 0 && drawnFirst < VMS * 4, `${drawnFirst} sparklines drawn before scrolling`);
    await p.$eval('tbody tr:last-child', (tr) => tr.scrollIntoView());
    await p.waitForSelector('tbody tr:last-child canvas.spark[data-metric="netin"][data-drawn]');
    await shot(p, 'many-rows-bottom');
  } finally {
    await p.close();
    await many.stop();
  }
});

test('with an API token the UI asks for it, then shows the empty state of a new store', async () => {
  const locked = await startServer(
    'token',
    (dir) => `metrics:
  database_path: "${dir}/metrics.db"
server:
  api_token: "${TOKEN}"
collectors:
  host: { enabled: false }
  proxmox: { enabled: false }
`,
  );
  dataDirs.push(locked.dir);
  const p = await browser.newPage();
  try {
    assert.equal((await call(locked, 'GET', '/api/charts?range=1h')).status, 401);
    await p.goto(`${locked.url}/?range=1h`);
    await p.waitForSelector('#token-dialog[open]');
    await shot(p, 'token-prompt');
    await p.fill('#token-dialog input[name="token"]', TOKEN);
    await p.click('#token-dialog button[value="ok"]');
    await dashboardReady(p);
    assert.equal(await p.getAttribute('#groups', 'data-state'), 'empty');
    assert.match(await p.textContent('#groups .empty h2'), /No history yet/);
    assert.equal(await p.evaluate(() => localStorage.getItem('pulse-metrics.token')), TOKEN, 'the token is kept');
    await shot(p, 'empty-state');
    // Written data shows up at the next refresh, with the token.
    const now = Date.now();
    const fresh = [0, 1, 2, 3, 4, 5].map((i) => ({ resourceType: 'node', resourceId: 'pve9:solo', metric: 'cpu', value: 10 + i, timestamp: now - (5 - i) * 10_000 }));
    const w = await call(locked, 'POST', '/api/metrics-store/write?sync=true', { points: fresh }, { Authorization: `Bearer ${TOKEN}` });
    assert.equal(w.status, 200, w.text);
    await p.click('#refresh');
    await p.waitForSelector('tr[data-id="pve9:solo"] canvas.spark[data-drawn]');
  } finally {
    await p.close();
    await locked.stop();
  }
});
