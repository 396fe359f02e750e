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
import { createRequire } from 'node:module';
import { chromium } from 'playwright-core';
import { GAP, RESOURCES, STOPPED, generate, resourceRecords } from './data.mjs';

const require = createRequire(import.meta.url);
const AXE = require.resolve('axe-core/axe.min.js');

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, '..');
const BIN = process.env.PULSE_METRICS_BIN || path.join(repo, 'target', 'debug', 'pulse-metrics');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const SHOTS = process.env.UI_SCREENSHOTS || path.join(repo, 'target', 'ui-screenshots');
const VIEWPORT = { width: 1600, height: 1000 };
const TOKEN = 'ui-test-token-7f3a';
const SERIES = RESOURCES.reduce((n, r) => n + r.metrics.length, 0);
const BROWSER_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

// ---------------------------------------------------------------- helpers

/**
 * Starts `pulse-metrics --config FILE serve --listen ADDR` (a free port
 * unless given) and waits for its address. `dir` reuses a data directory
 * (a restart); its config file is written only when new.
 */
async function startServer(name, yaml, { dir: reuse, listen = '127.0.0.1:0' } = {}) {
  const dir = reuse || fs.mkdtempSync(path.join(os.tmpdir(), `pulse-metrics-ui-${name}-`));
  const config = path.join(dir, 'config.yaml');
  if (!reuse) fs.writeFileSync(config, yaml(dir));
  const child = spawn(BIN, ['--config', config, 'serve', '--listen', listen], {
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

/**
 * Runs axe-core on the page as it is and fails on any serious or critical
 * violation (WCAG 2 A/AA rules, contrast included), listing each.
 */
async function axeCheck(p, where) {
  if (!(await p.evaluate(() => !!window.axe))) await p.addScriptTag({ path: AXE });
  const result = await p.evaluate(async () => {
    const r = await window.axe.run(document, { runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa'] }, resultTypes: ['violations'] });
    return r.violations.map((v) => ({
      id: v.id,
      impact: v.impact,
      help: v.help,
      nodes: v.nodes.slice(0, 5).map((n) => `${n.target.join(' ')}: ${n.failureSummary?.split('\n').slice(1, 2).join(' ')}`),
      count: v.nodes.length,
    }));
  });
  const bad = result.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  const text = bad.map((v) => `  ${v.impact} ${v.id} (${v.count}): ${v.help}\n    ${v.nodes.join('\n    ')}`).join('\n');
  console.log(`  axe ${where}: ${result.length} violation type(s), ${bad.length} serious or critical`);
  assert.equal(bad.length, 0, `axe-core in ${where}:\n${text}`);
}

/** Encoded (on the wire) and decoded body sizes of a response. */
async function wireSize(response) {
  const sizes = await response.request().sizes();
  const body = await response.body();
  return { wire: sizes.responseBodySize, plain: body.length, encoding: (await response.allHeaders())['content-encoding'] || '' };
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
  const named = await call(server, 'POST', '/api/metrics-store/write?sync=true', { resources: resourceRecords() });
  assert.equal(named.status, 200, `resource records refused: ${named.text}`);
  const m = await call(server, 'POST', '/api/metrics-store/maintenance');
  assert.equal(m.status, 200, `maintenance failed: ${m.text}`);

  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'pulse-metrics-ui-chromium-'));
  dataDirs.push(userDataDir);
  browser = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: VIEWPORT,
    colorScheme: 'dark',
    locale: 'en-US',
    timezoneId: 'UTC',
    args: BROWSER_ARGS,
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
  assert.match(await page.getAttribute(cell('pve1:104', 'cpu'), 'class'), /lvl-crit/);
  assert.match(await page.getAttribute(cell('pve1:105', 'memory'), 'class'), /lvl-warn/);
  assert.match(await page.getAttribute(cell('pve1:node1', 'cpu'), 'class'), /lvl-ok/);
  const critColour = await page.$eval(`${cell('pve1:104', 'cpu')} .val`, (e) => getComputedStyle(e).color);
  const okColour = await page.$eval(`${cell('pve1:node1', 'cpu')} .val`, (e) => getComputedStyle(e).color);
  assert.notEqual(critColour, okColour);
  // Current values with units.
  assert.match(await page.textContent(`${cell('pve1:104', 'cpu')} .val`), /^\d+(\.\d)?%$/);
  assert.match(await page.textContent(`${cell('pve1:101', 'netin')} .val`), /^[\d.,]+ (B|KiB|MiB)\/s$/);

  // The stopped VM's line breaks over its downtime.
  const gapRuns = Number(await page.getAttribute(`tr[data-id="${GAP.id}"] canvas.spark[data-metric="cpu"]`, 'data-runs'));
  assert.ok(gapRuns >= 2, `VM ${GAP.id} cpu sparkline has a break (runs: ${gapRuns})`);
  const steadyRuns = Number(await page.getAttribute(`tr[data-id="pve1:104"] canvas.spark[data-metric="cpu"]`, 'data-runs'));
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
  const sel = 'tr[data-id="pve1:104"] canvas.spark[data-metric="cpu"]';
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
  const width = await page.$eval('tr[data-id="pve1:104"] td[data-metric="cpu"] .fill', (e) => parseFloat(e.style.width));
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
    page.click('tr[data-id="pve1:104"] td[data-metric="cpu"] button.cell'),
  ]);
  const q = new URL(request.url()).searchParams;
  assert.equal(q.get('resourceType'), 'vm');
  assert.equal(q.get('resourceId'), 'pve1:104');
  assert.equal(q.get('metric'), 'cpu');
  assert.equal(q.get('range'), '4h');
  assert.ok(Number(q.get('maxPoints')) > 100);
  await page.waitForSelector('#detail[open] .detail-chart[data-state="ready"] canvas', { timeout: 10_000 });
  assert.equal(await page.textContent('#detail-title'), 'build01', 'the chart is titled with the name');

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
  // Each point says its own tier (the trailing minutes may be raw).
  assert.ok(['raw', 'minute', 'hourly', 'daily'].includes(tip.tier), `tier ${tip.tier}`);
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

test('rows lead with the name; the filter finds guests by name, node, tag and id', async () => {
  const p = await browser.newPage();
  try {
    await p.goto(`${server.url}/?range=1h&view=trends`);
    await dashboardReady(p);
    const row = 'tr[data-id="pve1:101"]';
    assert.equal(await p.textContent(`${row} .rname`), 'web01');
    assert.equal(await p.textContent(`${row} .rctx`), 'VM 101 · node1');
    assert.equal(await p.textContent('tr[data-id="pve1:203"] .rctx'), 'CT 203 · node3');
    assert.equal(await p.getAttribute(`${row} th.name`, 'title'), 'pve1:101 · prod, web');
    // A resource without a name shows its id, as before.
    assert.equal(await p.textContent('tr[data-id="docker1"] .rname'), 'docker1');
    // Rows come in the order of their names.
    const names = await p.$$eval('section[data-group="vm"] tbody tr .rname', (e) => e.map((x) => x.textContent));
    assert.deepEqual(names, [...names].sort((a, b) => a.localeCompare(b, 'en', { numeric: true })));
    assert.equal(names.length, 9);

    const shown = () => p.$$eval('tbody tr:not([hidden])', (rows) => rows.map((r) => r.dataset.id).sort());
    for (const [filter, ids] of [
      ['web', ['pve1:101', 'pve1:102']],
      ['BUILD01', ['pve1:104']],
      ['prod', ['pve1:101', 'pve1:102', 'pve1:103']],
      ['node3', ['pve1:103', 'pve1:106', 'pve1:109', 'pve1:203', 'pve1:node3']],
      ['pve1:105', ['pve1:105']],
    ]) {
      await p.fill('#filter', filter);
      assert.deepEqual(await shown(), ids, `filter ${filter}`);
    }
    await p.fill('#filter', 'web');
    await shot(p, 'filter-by-name');
    await p.fill('#filter', '');

    await p.click('tr[data-id="pve1:101"] td[data-metric="cpu"] button.cell');
    await p.waitForSelector('#detail[open] .detail-chart[data-state="ready"]', { timeout: 10_000 });
    assert.equal(await p.textContent('#detail-title'), 'web01');
    assert.match(await p.textContent('#detail .detail-sub'), /^VM 101 · node1 · pve1:101 · last 1h$/);
    await shot(p, 'detail-titled-by-name');
  } finally {
    await p.close();
  }
});

test('a settings change goes to settings.json, the config file stays as written, and reset to file undoes it', async () => {
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
  assert.match(await page.textContent('#estimate .basis'), new RegExp(`For ${SERIES} series with a raw point every 15 s`));
  // Where each value comes from: the test's file sets flush_interval only.
  assert.match(await page.textContent('.field[data-key="flush_interval"] .source'), /from the config file/);
  assert.match(await page.textContent('.field[data-key="retention.raw"] .source'), /default/);
  assert.match(await page.textContent('#config-files'), /config\.yaml.*settings\.json/);
  assert.equal(await page.isDisabled('#reset-file'), true, 'nothing to reset yet');

  // Edit raw retention: the estimate follows the form.
  const before = Number(await page.getAttribute('#estimate .big', 'data-estimate-bytes'));
  await page.fill('input[name="retention.raw"]', '6h');
  const after6h = Number(await page.getAttribute('#estimate .big', 'data-estimate-bytes'));
  assert.ok(after6h > before, `estimate grows with raw retention (${before} -> ${after6h})`);
  await page.fill('input[name="retention.raw"]', '3h');
  const configBefore = fs.readFileSync(server.config, 'utf8');
  const settingsFile = path.join(server.dir, 'settings.json');
  const [put] = await Promise.all([
    page.waitForResponse((r) => r.url().endsWith('/api/metrics-store/config') && r.request().method() === 'PUT'),
    page.click('#save'),
  ]);
  assert.equal(put.status(), 200, await put.text());
  assert.deepEqual(JSON.parse(put.request().postData()), { retention: { raw: '3h' } }, 'only the changed field is sent');
  await page.waitForSelector('#save-status.ok');
  assert.match(await page.textContent('#save-status'), /Saved and applied \(kept in .*settings\.json; the configuration file is left as it is\)/);
  assert.equal(fs.readFileSync(server.config, 'utf8'), configBefore, 'the config file is never written');
  assert.deepEqual(JSON.parse(fs.readFileSync(settingsFile, 'utf8')), { metrics: { retention: { raw: '3h' } } });
  assert.equal((await call(server, 'GET', '/api/metrics-store/config')).json.retention.raw, '3h');
  await page.waitForFunction(() => /changed here; the file says 2h/.test(document.querySelector('.field[data-key="retention.raw"] .source').textContent));
  await shot(page, 'settings-saved', { fullPage: true });

  await page.reload();
  await page.waitForFunction(() => document.querySelector('input[name="retention.raw"]')?.value === '3h');
  assert.equal(await page.inputValue('input[name="retention.minute"]'), '24h');
  assert.match(await page.textContent('.field[data-key="retention.raw"] .source'), /changed here/);

  // Reset to file: back to the file's (here the default) value, settings.json gone.
  const [del] = await Promise.all([
    page.waitForResponse((r) => r.url().endsWith('/api/metrics-store/config') && r.request().method() === 'DELETE'),
    page.click('#reset-file'),
  ]);
  assert.equal(del.status(), 200);
  await page.waitForFunction(() => document.querySelector('input[name="retention.raw"]')?.value === '2h');
  await page.waitForSelector('#save-status.ok');
  assert.match(await page.textContent('#save-status'), /Reset to the configuration file/);
  assert.equal(fs.existsSync(settingsFile), false, 'reset removes settings.json');
  assert.equal(fs.readFileSync(server.config, 'utf8'), configBefore);
  assert.equal((await call(server, 'GET', '/api/metrics-store/config')).json.retention.raw, '2h');
});

test('invalid settings are explained in words with their range, Save waits, and nothing is saved', async () => {
  await page.goto(`${server.url}/#/settings`);
  await page.waitForFunction(() => document.querySelector('input[name="retention.raw"]')?.value === '2h');
  const fileBefore = fs.readFileSync(server.config, 'utf8');
  const configBefore = (await call(server, 'GET', '/api/metrics-store/config')).json;
  const puts = [];
  page.on('request', (r) => r.method() === 'PUT' && puts.push(r.url()));
  const fieldError = (key) => page.textContent(`.field[data-key="${key}"] .error`);
  const expectError = async (key, text, re) => {
    await page.fill(`input[name="${key}"]`, text);
    await page.waitForSelector(`.field[data-key="${key}"].invalid .error:not([hidden])`);
    assert.match(await fieldError(key), re, `${key} = ${text}`);
    assert.equal(await page.isDisabled('#save'), true, `Save is disabled while ${key} = ${text}`);
    assert.equal(await page.getAttribute(`input[name="${key}"]`, 'aria-invalid'), 'true');
  };
  // The rollup interval is 5 min: raw must be between 10 min and 3650 d.
  await expectError('retention.raw', '0', /^Raw retention needs a unit .* between 10 min and 3650 d \(at least twice the rollup interval, 5 min/);
  await expectError('retention.raw', '0s', /^Raw retention must be between 10 min and 3650 d .*; it is 0 s\.$/);
  await expectError('retention.raw', '1m', /^Raw retention must be between 10 min and 3650 d .*; it is 1 min\.$/);
  await expectError('retention.raw', 'soon', /^Raw retention: “soon” is not a duration\. Write e\.g\. 90s, 5m, 2h or 7d, between 10 min and 3650 d/);
  await shot(page, 'settings-invalid', { fullPage: true });
  await page.fill('input[name="retention.raw"]', '2h');
  await expectError('retention.minute', '30m', /^Minute retention must be between 2 h and 3650 d \(not shorter than the raw retention, 2 h\); it is 30 min\.$/);
  await page.fill('input[name="retention.minute"]', '24h');
  await expectError('flush_interval', '2d', /^Flush interval must be between 100 ms and 1 h; it is 2 d\.$/);
  await page.fill('input[name="flush_interval"]', '1s');
  await expectError('write_buffer', '0', /^Write buffer must be a whole number of points between 1 and 100,000\.$/);
  await page.fill('input[name="write_buffer"]', '100');
  await page.waitForFunction(() => !document.querySelector('.field.invalid'));
  assert.equal(puts.length, 0, 'nothing was sent while a field was invalid');

  // A refusal of the service (a rule the page does not know) is shown in
  // words beside its field, without HTTP codes.
  await page.route('**/api/metrics-store/config', (route) =>
    route.request().method() === 'PUT'
      ? route.fulfill({
          status: 400,
          contentType: 'application/json',
          body: JSON.stringify({
            error: 'invalid configuration: config `metrics.retention.raw`: must be at least twice the rollup interval (5m)',
            details: [{ key: 'metrics.retention.raw', error: 'config `metrics.retention.raw`: must be at least twice the rollup interval (5m)' }],
          }),
        })
      : route.continue(),
  );
  try {
    await page.fill('input[name="retention.raw"]', '3h');
    await page.click('#save');
    await page.waitForSelector('.field[data-key="retention.raw"].invalid');
    assert.equal(await fieldError('retention.raw'), 'Raw retention must be at least twice the rollup interval (5m)');
    assert.match(await page.textContent('#banner'), /Not saved: Raw retention must be at least twice/);
    assert.doesNotMatch(await page.textContent('#banner'), /HTTP 400|\/api\//);
    assert.match(await page.textContent('#save-status'), /Not saved/);
  } finally {
    await page.unroute('**/api/metrics-store/config');
  }

  // The service refuses what the next start would refuse (issue 10), naming the key.
  const r = await call(server, 'PUT', '/api/metrics-store/config', { database_path: '/tmp' });
  assert.equal(r.status, 400, r.text);
  assert.equal(r.json.details[0].key, 'metrics.database_path');
  assert.match(r.json.error, /is a directory/);

  assert.equal(fs.readFileSync(server.config, 'utf8'), fileBefore, 'the config file is unchanged');
  assert.equal(fs.existsSync(path.join(server.dir, 'settings.json')), false, 'nothing was saved');
  assert.deepEqual((await call(server, 'GET', '/api/metrics-store/config')).json, configBefore, 'the service config is unchanged');
  await page.reload();
  await page.waitForFunction(() => document.querySelector('input[name="retention.raw"]')?.value === '2h');
  assert.equal(await page.isVisible('.field[data-key="retention.raw"] .error'), false);
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

test('a phone shows name, CPU, memory and disk without sideways scrolling, and the status line', async () => {
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
    for (const id of ['pve1:node1', 'pve1:104', 'pve1:201']) {
      const boxes = await phone.$eval(`tr[data-id="${id}"]`, (tr) => {
        const wrap = tr.closest('.table-wrap');
        const r = (el) => {
          const b = el.getBoundingClientRect();
          return { left: b.left, right: b.right, width: b.width };
        };
        return {
          name: r(tr.querySelector('th.name')),
          cells: ['cpu', 'memory', 'disk'].map((m) => ({ m, ...r(tr.querySelector(`td[data-metric="${m}"] .val`)), text: tr.querySelector(`td[data-metric="${m}"] .val`).textContent })),
          scroll: wrap.scrollLeft,
          wrapRight: wrap.getBoundingClientRect().right,
        };
      });
      assert.equal(boxes.scroll, 0);
      assert.ok(boxes.name.left >= 0 && boxes.name.width > 40, `${id}: name shown`);
      for (const c of boxes.cells) {
        assert.ok(c.left >= 0 && c.right <= Math.min(390, boxes.wrapRight) && c.width > 0, `${id} ${c.m} is on screen: ${JSON.stringify(c)}`);
        assert.match(c.text, /\d/, `${id} ${c.m} shows a value`);
      }
    }
    const spark = await phone.$eval('tr[data-id="pve1:104"] canvas.spark[data-metric="disk"]', (c) => c.getBoundingClientRect().right);
    assert.ok(spark <= 390, `the disk sparkline is on screen (${spark})`);
    assert.equal(await phone.isVisible('#status'), true, 'the status line is visible');
    assert.match(await phone.textContent('#status'), /Updated/);
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

test('the dashboard answer is compressed, rounded, and an open tab refreshes only what changed', async () => {
  const p = await browser.newPage();
  const charts = [];
  p.on('response', (r) => r.url().includes('/api/charts') && charts.push(r));
  try {
    await p.goto(`${server.url}/?range=1h&view=trends`);
    await dashboardReady(p);
    const full = await wireSize(charts[0]);
    assert.match(full.encoding, /^(br|gzip)$/, 'compressed when the browser asks');
    assert.ok(full.wire * 4 < full.plain, `compressed ${full.wire} B of ${full.plain} B`);
    const body = JSON.parse((await charts[0].body()).toString());
    const values = Object.values(body.nodeData).flatMap((m) => Object.values(m).flatMap((pts) => pts.map((q) => q.value)));
    assert.ok(values.length > 100);
    for (const v of values) assert.ok(v.toExponential().split('e')[0].replace(/[.-]/g, '').length <= 4, `${v} has more than 4 significant digits`);
    assert.ok(body.buckets.vm['pve1:104'].cpu.segments.length >= 1, 'buckets give segments');

    // The next refreshes (every 10 s) ask for the last buckets only, on the same grid.
    await p.waitForFunction((n) => performance.getEntriesByType('resource').filter((e) => e.name.includes('/api/charts')).length >= n, 3, { timeout: 30_000 });
    await dashboardReady(p);
    const incs = charts.slice(1, 3);
    assert.equal(incs.length, 2);
    const wire = [];
    for (const r of incs) {
      const q = new URL(r.url()).searchParams;
      assert.equal(q.get('range'), null, r.url());
      assert.ok(Number(q.get('maxPoints')) <= 6, r.url());
      assert.equal((Number(q.get('start')) - (body.timestamp - 3600_000)) % 30_000, 0, 'on the grid of the full answer');
      const size = await wireSize(r);
      assert.ok(size.wire * 5 < full.wire, `a refresh moves ${size.wire} B, the full answer ${full.wire} B`);
      wire.push(size.wire);
    }
    // Sparklines keep their history after the merges.
    const sel = 'tr[data-id="pve1:104"] canvas.spark[data-metric="cpu"]';
    await p.$eval(sel, (c) => c.scrollIntoView({ block: 'center' }));
    await p.waitForSelector(`${sel}[data-drawn]`);
    const drawn = Number(await p.getAttribute(sel, 'data-points'));
    const fresh = (await call(server, 'GET', '/api/charts?range=1h&maxPoints=120')).json.data['pve1:104'].cpu.length;
    assert.ok(Math.abs(drawn - fresh) <= 2, `${drawn} points after incremental refreshes, ${fresh} in a full answer`);
    // An open 1 h tab: 360 refreshes an hour, a full answer every 10 minutes.
    const perHour = 6 * full.wire + 354 * (wire.reduce((a, b) => a + b, 0) / wire.length);
    console.log(`  1h tab, ${SERIES} series: full answer ${full.wire} B (${full.plain} B plain, ${full.encoding}), refresh ~${Math.round(wire[0])} B, ~${(perHour / 1e6).toFixed(2)} MB an hour`);
    assert.ok(perHour < 5e6, `${perHour} B an hour`);
  } finally {
    await p.close();
  }
});

test('30d and 90d sparklines are lines on continuous data, whatever tiers answer', async () => {
  const long = await startServer(
    'long',
    (dir) => `metrics:
  database_path: "${dir}/metrics.db"
  flush_interval: 1s
collectors:
  host: { enabled: false }
  proxmox: { enabled: false }
`,
  );
  dataDirs.push(long.dir);
  const p = await browser.newPage();
  try {
    // 4 days every 5 minutes, the last 2 hours every 15 s: daily buckets,
    // hourly ones for today, minutes and raw points at the trailing edge.
    const now = Date.now();
    const pts = [];
    for (const id of ['pve3:n1', 'pve3:n2']) {
      for (const metric of ['cpu', 'memory', 'disk']) {
        for (let t = now - 4 * 86_400_000; t < now - 2 * 3600_000; t += 300_000) pts.push({ resourceType: 'node', resourceId: id, metric, value: 40 + 10 * Math.sin(t / 3.6e6), timestamp: Math.floor(t / 1000) * 1000 });
        for (let t = now - 2 * 3600_000; t <= now; t += 15_000) pts.push({ resourceType: 'node', resourceId: id, metric, value: 40 + 10 * Math.sin(t / 3.6e6), timestamp: Math.floor(t / 1000) * 1000 });
      }
    }
    await ingest(long, pts);
    const m = await call(long, 'POST', '/api/metrics-store/maintenance');
    assert.equal(m.status, 200);
    for (const range of ['30d', '90d']) {
      await p.goto(`${long.url}/?range=${range}&view=trends`);
      await dashboardReady(p);
      const answer = (await call(long, 'GET', `/api/charts?range=${range}&maxPoints=120`)).json;
      const tiers = new Set(answer.buckets.node['pve3:n1'].cpu.segments.map((s) => s.tier));
      assert.ok(tiers.has('daily') && tiers.size >= 2, `${range}: the answer mixes tiers (${[...tiers]})`);
      for (const id of ['pve3:n1', 'pve3:n2']) {
        for (const metric of ['cpu', 'memory', 'disk']) {
          const sel = `tr[data-id="${id}"] canvas.spark[data-metric="${metric}"]`;
          await p.waitForSelector(`${sel}[data-drawn]`);
          assert.equal(await p.getAttribute(sel, 'data-runs'), '1', `${range} ${id} ${metric} is one line`);
          assert.ok((await inkOf(p, sel)) > 100, `${range} ${id} ${metric} has a visible line`);
        }
      }
      await shot(p, `long-${range}`);
      // The detail chart agrees: no gap in continuous data.
      await p.click('tr[data-id="pve3:n1"] td[data-metric="cpu"] button.cell');
      await p.waitForSelector('#detail[open] .detail-chart[data-state="ready"] canvas');
      assert.equal(await p.getAttribute('.detail-chart', 'data-gaps'), '0', `${range} detail chart`);
      await p.keyboard.press('Escape');
    }
    // The rule itself, on an answer whose trailing edge outnumbers its days
    // (the usual spacing is then 6 h, and a daily step looked like a gap).
    const runs = await p.evaluate(async () => {
      const { applySegments, runsOf, typicalStep } = await import('/js/sparkline.js');
      const day = 86_400_000;
      const t0 = Date.UTC(2026, 0, 1);
      const pts = [];
      for (let d = 0; d < 3; d++) pts.push({ timestamp: t0 + d * day, value: 1 });
      for (let h = 0; h < 6; h++) pts.push({ timestamp: t0 + 3 * day + h * 6 * 3600_000, value: 1 });
      const segs = [
        { start: t0, tier: 'daily', width: day },
        { start: t0 + 3 * day, tier: 'hourly', width: 6 * 3600_000 },
      ];
      const oldRule = pts.slice(1).filter((q, i) => q.timestamp - pts[i].timestamp > typicalStep(pts) * 2.5).length;
      return { oldRule, runs: runsOf(applySegments(pts, segs)).length };
    });
    assert.ok(runs.oldRule > 0, 'the old rule broke daily steps');
    assert.equal(runs.runs, 1, 'per-point widths keep them one line');
  } finally {
    await p.close();
    await long.stop();
  }
});

test('empty, filtered, late and switching states say what happens; stopped resources are greyed at every range', async () => {
  const p = await browser.newPage();
  try {
    // A custom window with no data: after the history began (here: ahead
    // of it), and before it.
    const later = Date.now() + 3600_000;
    await p.goto(`${server.url}/?range=custom&start=${later}&end=${later + 3600_000}`);
    await dashboardReady(p);
    assert.equal(await p.getAttribute('#groups', 'data-state'), 'empty');
    assert.match(await p.textContent('#groups .empty h2'), /^No data in this range$/);
    assert.match(await p.textContent('#groups .empty p'), /History goes back to .* but nothing was recorded between/);
    assert.equal(await p.$$eval('tbody tr', (r) => r.length), 0, 'no rows of dashes');
    await shot(p, 'custom-window-no-data');
    const before = Date.now() - 2 * 86_400_000;
    await p.goto(`${server.url}/?range=custom&start=${before - 3600_000}&end=${before}`);
    await dashboardReady(p);
    assert.match(await p.textContent('#groups .empty h2'), /^Collecting history since /);
    assert.equal(await p.$$eval('tbody tr', (r) => r.length), 0);

    // A filter that matches nothing.
    await p.goto(`${server.url}/?range=1h&view=trends`);
    await dashboardReady(p);
    await p.fill('#filter', 'zebra');
    await p.waitForSelector('#groups .no-match');
    assert.equal((await p.textContent('#groups .no-match h2')).trim(), 'No resource matches “zebra”');
    await shot(p, 'filter-no-match');
    await p.fill('#filter', '104');
    assert.equal(await p.isVisible('#groups .no-match'), false);
    assert.equal(await p.$$eval('tbody tr:not([hidden])', (r) => r.length), 1);
    await p.fill('#filter', '');

    // Late points waiting: the dashboard says so (and asks again soon).
    await p.route('**/api/charts?**', async (route) => {
      const r = await route.fetch();
      const json = await r.json();
      json.stats.lateCount = 252922;
      await route.fulfill({ response: r, json });
    });
    await p.click('#refresh');
    await p.waitForSelector('#notice[data-late="true"]');
    assert.match(await p.textContent('#notice'), /252,922 points written late .* being folded into the history/);
    await shot(p, 'late-points-notice');
    await p.unroute('**/api/charts?**');
    await p.click('#refresh');
    await p.waitForSelector('#notice[data-late="false"]', { state: 'attached' });

    // A range switch dims the old sparklines until the answer comes.
    let release;
    const held = new Promise((r) => (release = r));
    await p.route('**/api/charts?**', async (route) => {
      await held;
      await route.continue();
    });
    await p.click('#ranges button[data-range="24h"]');
    await p.waitForSelector('#groups.switching');
    const opacity = await p.$eval('#groups.switching canvas.spark', (c) => Number(getComputedStyle(c).opacity));
    assert.ok(opacity < 0.5, `old sparklines dimmed (${opacity})`);
    release();
    await p.waitForSelector('#groups:not(.switching)[aria-busy="false"]');
    await p.unroute('**/api/charts?**');

    // VM 109 has been stopped for 40 minutes: greyed at every range. (VM
    // 104 gets a fresh point: the suite's data ends when it started.)
    await ingest(server, [{ resourceType: 'vm', resourceId: 'pve1:104', metric: 'cpu', value: 93, timestamp: Date.now() }]);
    for (const range of ['1h', '24h', '7d']) {
      await p.goto(`${server.url}/?range=${range}&view=trends`);
      await dashboardReady(p);
      const row = `tr[data-id="${STOPPED.id}"]`;
      assert.match(await p.getAttribute(row, 'class'), /stopped/, `${range}: VM 109 is shown as stopped`);
      assert.match(await p.getAttribute(`${row} td[data-metric="cpu"]`, 'class'), /stale/);
      assert.doesNotMatch(await p.getAttribute('tr[data-id="pve1:104"] td[data-metric="cpu"]', 'class'), /stale/, `${range}: a running VM is not`);
    }
    // Wide screens: metric columns use the table's width.
    await p.goto(`${server.url}/?range=1h&view=trends`);
    await dashboardReady(p);
    const widths = await p.$$eval('section[data-group="vm"] thead th.m', (ths) => ths.map((t) => t.getBoundingClientRect().width));
    assert.ok(Math.min(...widths) > 150, `metric columns spread over the table: ${widths.map(Math.round)}`);
  } finally {
    await p.close();
  }
});

test('when the service stops the status turns red and says since when, then recovers by itself', async () => {
  const yaml = (dir) => `metrics:
  database_path: "${dir}/metrics.db"
collectors:
  host: { enabled: false }
  proxmox: { enabled: false }
`;
  let svc = await startServer('restart', yaml);
  dataDirs.push(svc.dir);
  const listen = svc.url.replace('http://', '');
  const p = await browser.newPage();
  try {
    const now = Date.now();
    await ingest(svc, [0, 1, 2, 3].map((i) => ({ resourceType: 'node', resourceId: 'pve5:n1', metric: 'cpu', value: 5 + i, timestamp: now - (3 - i) * 10_000 })));
    await p.goto(`${svc.url}/?range=15m&view=trends`);
    await dashboardReady(p);
    assert.equal(await p.getAttribute('#status', 'data-state'), 'ok');
    await svc.stop();
    const stoppedAt = Date.now();
    await p.waitForSelector('#status.error', { timeout: 20_000 });
    const text = await p.textContent('#status');
    assert.match(text, /^Update failed since \d{1,2}:\d{2}:\d{2}.*Retrying every 5 s\./);
    const dot = await p.$eval('#status', (e) => getComputedStyle(e, '::before').backgroundColor);
    assert.match(dot, /rgb\((2[0-9]{2}), ([0-9]{1,2}), ([0-9]{1,2})\)/, `the dot is red (${dot})`);
    assert.ok(await p.isVisible('#banner'), 'the error is in the banner');
    await shot(p, 'service-stopped');
    svc = await startServer('restart', yaml, { dir: svc.dir, listen });
    await p.waitForSelector('#status:not(.error)[data-state="ok"]', { timeout: 20_000 });
    assert.match(await p.textContent('#status'), /^Updated/);
    assert.equal(await p.isVisible('#banner'), false, 'the banner is gone');
    console.log(`  recovered ${Math.round((Date.now() - stoppedAt) / 1000)} s after the stop`);
  } finally {
    await p.close();
    await svc.stop();
  }
});

test('a fresh install shows its first sample within seconds, on a range that fits the history', async () => {
  const fresh = await startServer(
    'fresh',
    (dir) => `metrics:
  database_path: "${dir}/metrics.db"
collectors:
  host: { enabled: true, interval: 5s }
  proxmox: { enabled: false }
`,
  );
  dataDirs.push(fresh.dir);
  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'pulse-metrics-ui-fresh-'));
  dataDirs.push(userDataDir);
  const ctx = await chromium.launchPersistentContext(userDataDir, { executablePath: CHROMIUM, headless: true, viewport: VIEWPORT, args: BROWSER_ARGS });
  try {
    const p = ctx.pages()[0] || (await ctx.newPage());
    const requests = [];
    p.on('request', (r) => r.url().includes('/api/charts') && requests.push(new URL(r.url()).searchParams.get('range')));
    const t0 = Date.now();
    await p.goto(`${fresh.url}/`);
    await p.waitForSelector('#groups[data-state="data"] tr[data-type="node"] canvas.spark[data-metric="cpu"]', { timeout: 8_000 });
    console.log(`  first sample on screen ${Date.now() - t0} ms after opening a fresh install`);
    assert.equal(await p.getAttribute('#ranges button[data-range="15m"]', 'aria-pressed'), 'true', 'opens on 15m while history is under an hour');
    assert.ok(requests.includes('15m'), `requests: ${requests}`);
    assert.equal(new URL(p.url()).searchParams.get('range'), null, 'the chosen range is not pinned in the URL');
    await shot(p, 'fresh-install');
  } finally {
    await ctx.close();
    await fresh.stop();
  }
});

test('dates, times and numbers follow the browser locale (de-DE), with dates when a range spans days', async () => {
  // English first: the 24 h sparkline tooltip carries the date.
  await page.goto(`${server.url}/?range=24h&view=trends`);
  await dashboardReady(page);
  const hover = async (p) => {
    const sel = 'tr[data-id="pve1:104"] canvas.spark[data-metric="cpu"]';
    await p.$eval(sel, (c) => c.scrollIntoView({ block: 'center' }));
    const box = await p.$eval(sel, (c) => {
      const r = c.getBoundingClientRect();
      return { x: r.x, y: r.y, w: r.width, h: r.height };
    });
    await p.mouse.move(box.x + box.w - 3, box.y + box.h / 2);
    await p.waitForSelector('#tooltip:not([hidden])');
    return p.textContent('#tooltip');
  };
  assert.match(await hover(page), /^[A-Z][a-z]{2} \d{1,2}, \d{2}:\d{2}/, 'en-US: "Nov 30, 14:15"');

  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'pulse-metrics-ui-de-'));
  dataDirs.push(userDataDir);
  const ctx = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: VIEWPORT,
    locale: 'de-DE',
    timezoneId: 'Europe/Berlin',
    args: [...BROWSER_ARGS, '--lang=de-DE'],
  });
  try {
    const p = ctx.pages()[0] || (await ctx.newPage());
    assert.equal(await p.evaluate(() => Intl.DateTimeFormat().resolvedOptions().locale), 'de-DE');
    await p.goto(`${server.url}/?range=24h&view=trends`);
    await dashboardReady(p);
    const cell = (id, m) => p.textContent(`tr[data-id="${id}"] td[data-metric="${m}"] .val`);
    assert.match(await cell('pve1:104', 'cpu'), /^\d{2}\s%$/, 'percent as de-DE writes it');
    assert.match(await cell('pve1:101', 'netin'), /^\d+(,\d+)? (B|KiB|MiB)\/s$/, 'decimal comma');
    assert.match(await hover(p), /^\d{1,2}\. [A-Z][a-zä]{2}\.?, \d{2}:\d{2}/, 'de-DE: "30. Nov., 14:15"');
    assert.match(await p.textContent('#status'), /Updated \d{2}:\d{2}:\d{2}/);
    // The detail chart's axes: 24-hour times with dates over a day, days over a week.
    for (const [range, re] of [
      ['24h', /^(\d{1,2}\. [A-Z][a-zä]{2}\.?, )?\d{2}:\d{2}( \| (\d{1,2}\. [A-Z][a-zä]{2}\.?, )?\d{2}:\d{2})+$/],
      ['7d', /^\d{1,2}\. [A-Z][a-zä]{2}\.?( \| \d{1,2}\. [A-Z][a-zä]{2}\.?)+$/],
    ]) {
      await p.goto(`${server.url}/?range=${range}&view=trends`);
      await dashboardReady(p);
      await p.click('tr[data-id="pve1:104"] td[data-metric="cpu"] button.cell');
      await p.waitForSelector('#detail[open] .detail-chart[data-state="ready"][data-x-ticks]');
      const ticks = await p.getAttribute('.detail-chart', 'data-x-ticks');
      assert.match(ticks, re, `${range} axis: ${ticks}`);
      assert.doesNotMatch(ticks, /AM|PM|am|pm|\//, `${range} axis is not US-style: ${ticks}`);
      if (range === '24h') {
        assert.match(await p.textContent('.detail-summary [data-stat="current"] .v'), /^\d{2}\s%$/);
        await shot(p, 'de-detail-24h');
      }
      await p.keyboard.press('Escape');
    }
  } finally {
    await ctx.close();
  }
});

test('axe-core finds no serious or critical violation on the dashboard, the detail dialog and the settings, in both themes', async () => {
  const p = await browser.newPage();
  try {
    for (const theme of ['dark', 'light']) {
      await p.emulateMedia({ colorScheme: theme });
      await p.goto(`${server.url}/?range=1h&view=trends`);
      await dashboardReady(p);
      await p.waitForSelector('canvas.spark[data-drawn]');
      await axeCheck(p, `dashboard (${theme})`);
      await p.click('tr[data-id="pve1:104"] td[data-metric="cpu"] button.cell');
      await p.waitForSelector('#detail[open] .detail-chart[data-state="ready"] canvas');
      await axeCheck(p, `detail dialog (${theme})`);
      await p.keyboard.press('Escape');
      await p.goto(`${server.url}/#/settings`);
      await p.waitForSelector('#health .kvi[data-k="series"]');
      await p.waitForFunction(() => /measured|assumed|rows/.test(document.querySelector('#estimate .basis')?.textContent || ''));
      await axeCheck(p, `settings (${theme})`);
      await shot(p, `axe-settings-${theme}`, { fullPage: true });
    }
  } finally {
    await p.close();
  }
});

test('a line protocol push shows in the collector table with its points, errors and last error', async () => {
  const s = await startServer(
    'push',
    (dir) => `# ui-tests: temporary configuration
metrics:
  database_path: "${dir}/metrics.db"
collectors:
  host:
    enabled: false
`,
  );
  dataDirs.push(s.dir);
  const p = await browser.newPage();
  try {
    const now = Math.floor(Date.now() / 1000);
    const write = (body) => fetch(`${s.url}/api/v2/write?org=proxmox&bucket=pve1&precision=s`, { method: 'POST', body });
    const ok = await write(`cpustat,object=nodes,host=pve-a cpu=0.25 ${now}\nmemory,object=nodes,host=pve-a memused=1,memtotal=4 ${now}\n`);
    assert.equal(ok.status, 204, await ok.text());
    const bad = await write(`cpustat,object=nodes,host=pve-a cpu=0.5 ${now + 10}\nm v=1.2.3 ${now}\n`);
    assert.equal(bad.status, 400);
    await p.goto(`${s.url}/#/settings`);
    const row = p.locator('table.collectors tbody tr', { hasText: 'influx:pve1' });
    await row.waitFor();
    const cells = await row.locator('td').allTextContents();
    assert.equal(cells[0], 'influx:pve1');
    assert.match(cells[1], /^error \(1 failures\) · 1 errors since start$/);
    assert.notEqual(cells[2], '—', 'the last successful push has a time');
    assert.equal(cells[3], '2');
    assert.match(await p.textContent('table.collectors'), /line 2: unexpected "\.3 \d+"/);
  } finally {
    await p.close();
    await s.stop();
  }
});
