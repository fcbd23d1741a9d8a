// Opens a local HTML file in headless Chromium and reports, as one JSON object
// on stdout, what a reader's browser would do with it:
//   {"loaded":true,"console":[...errors and warnings...],"requests":[...urls...],
//    "charts":[{"id":"chunks","polylines":1,"points":[12]}...],"screenshot":"PATH","png_bytes":N}
// The test (html_report_browser_test.cc) asserts on it.
//
// It speaks the DevTools protocol over --remote-debugging-pipe (fd 3 in, fd 4
// out, messages separated by NUL), so it needs Node and Chromium only: no npm
// package, nothing downloaded. Every wait is on an event, bounded by a
// deadline that is generous for a loaded machine.
//
// usage: node browser_check.mjs CHROMIUM FILE.html SCREENSHOT.png [timeout_ms]
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';

const [chromium, htmlPath, pngPath, timeoutArg] = process.argv.slice(2);
if (!chromium || !htmlPath || !pngPath) {
  console.error('usage: node browser_check.mjs CHROMIUM FILE.html SCREENSHOT.png [timeout_ms]');
  process.exit(2);
}
const timeoutMs = Number(timeoutArg || 120000);
const pageUrl = pathToFileURL(resolve(htmlPath)).href;
const profile = mkdtempSync(join(tmpdir(), 'sluice-chromium-'));

const browser = spawn(chromium, [
  '--headless=new', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage',
  '--remote-debugging-pipe', `--user-data-dir=${profile}`, '--no-first-run',
  '--no-default-browser-check', '--disable-background-networking', '--disable-extensions',
  '--disable-sync', '--disable-component-update', '--disable-default-apps', '--mute-audio',
  '--hide-scrollbars', 'about:blank',
], { stdio: ['ignore', 'ignore', 'pipe', 'pipe', 'pipe'] });
let browserStderr = '';
browser.stderr.on('data', (d) => { browserStderr = (browserStderr + d).slice(-4000); });

const toBrowser = browser.stdio[3];
const fromBrowser = browser.stdio[4];
let nextId = 1;
const pending = new Map();
const listeners = [];
let buffered = Buffer.alloc(0);
fromBrowser.on('data', (chunk) => {
  buffered = Buffer.concat([buffered, chunk]);
  for (let end = buffered.indexOf(0); end >= 0; end = buffered.indexOf(0)) {
    const message = JSON.parse(buffered.subarray(0, end).toString('utf8'));
    buffered = buffered.subarray(end + 1);
    if (message.id !== undefined && pending.has(message.id)) {
      const { resolve: ok, reject } = pending.get(message.id);
      pending.delete(message.id);
      if (message.error) reject(new Error(`${message.error.message} (${message.error.code})`));
      else ok(message.result);
    } else if (message.method) {
      for (const listener of listeners) listener(message);
    }
  }
});

function send(method, params = {}, sessionId = undefined) {
  const id = nextId++;
  const message = { id, method, params };
  if (sessionId) message.sessionId = sessionId;
  toBrowser.write(JSON.stringify(message) + '\0');
  return new Promise((ok, reject) => pending.set(id, { resolve: ok, reject }));
}

function waitFor(predicate, what) {
  return new Promise((ok, reject) => {
    const timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), timeoutMs);
    listeners.push((message) => {
      if (predicate(message)) {
        clearTimeout(timer);
        ok(message);
      }
    });
  });
}

const result = { loaded: false, url: pageUrl, console: [], requests: [], charts: [] };
let exitCode = 0;
const deadline = setTimeout(() => {
  result.error = `no answer from ${chromium} within ${timeoutMs} ms; stderr: ${browserStderr}`;
  finish(1);
}, timeoutMs + 10000);

function finish(code) {
  clearTimeout(deadline);
  process.stdout.write(JSON.stringify(result) + '\n');
  try { browser.kill('SIGKILL'); } catch { /* already gone */ }
  try { rmSync(profile, { recursive: true, force: true }); } catch { /* best effort */ }
  process.exit(code);
}

browser.on('exit', (code, signal) => {
  if (!result.done) {
    result.error = `chromium exited (${code ?? signal}) early; stderr: ${browserStderr}`;
    finish(1);
  }
});

try {
  const { targetId } = await send('Target.createTarget', { url: 'about:blank' });
  const { sessionId } = await send('Target.attachToTarget', { targetId, flatten: true });
  const mine = (m) => m.sessionId === sessionId;
  listeners.push((m) => {
    if (!mine(m)) return;
    if (m.method === 'Runtime.consoleAPICalled' && ['error', 'warning', 'assert'].includes(m.params.type)) {
      result.console.push(`console.${m.params.type}: ${m.params.args.map((a) => a.value ?? a.description).join(' ')}`);
    } else if (m.method === 'Runtime.exceptionThrown') {
      result.console.push(`exception: ${m.params.exceptionDetails.text} ${m.params.exceptionDetails.exception?.description ?? ''}`);
    } else if (m.method === 'Log.entryAdded' && ['error', 'warning'].includes(m.params.entry.level)) {
      // CSP violations and failed loads arrive here.
      result.console.push(`${m.params.entry.source} ${m.params.entry.level}: ${m.params.entry.text}`);
    } else if (m.method === 'Network.requestWillBeSent') {
      result.requests.push(m.params.request.url);
    }
  });
  await send('Runtime.enable', {}, sessionId);
  await send('Log.enable', {}, sessionId);
  await send('Network.enable', {}, sessionId);
  await send('Page.enable', {}, sessionId);
  await send('Emulation.setDeviceMetricsOverride',
    { width: 1200, height: 900, deviceScaleFactor: 1, mobile: false }, sessionId);
  const loaded = waitFor((m) => mine(m) && m.method === 'Page.loadEventFired', 'the load event');
  const navigation = await send('Page.navigate', { url: pageUrl }, sessionId);
  if (navigation.errorText) throw new Error(`navigation failed: ${navigation.errorText}`);
  await loaded;
  result.loaded = true;

  // What the reader sees: each chart's polylines and their points.
  const { result: charts } = await send('Runtime.evaluate', {
    returnByValue: true,
    expression: `[...document.querySelectorAll('figure')].map((f) => ({
      id: f.id,
      svg: f.querySelectorAll('svg').length,
      polylines: f.querySelectorAll('svg polyline').length,
      points: [...f.querySelectorAll('svg polyline')].map((p) => p.points.numberOfItems),
      width: Math.round(f.querySelector('svg')?.getBoundingClientRect().width ?? 0),
    }))`,
  }, sessionId);
  result.charts = charts.value;
  const { result: counts } = await send('Runtime.evaluate', {
    returnByValue: true,
    expression: `({scripts: document.scripts.length, title: document.title,
                   text: document.body.innerText.length})`,
  }, sessionId);
  result.page = counts.value;

  const { cssContentSize } = await send('Page.getLayoutMetrics', {}, sessionId);
  const shot = await send('Page.captureScreenshot', {
    format: 'png', captureBeyondViewport: true,
    clip: { x: 0, y: 0, width: 1200, height: Math.ceil(cssContentSize.height), scale: 1 },
  }, sessionId);
  const png = Buffer.from(shot.data, 'base64');
  writeFileSync(pngPath, png);
  result.screenshot = pngPath;
  result.png_bytes = png.length;
  result.done = true;
  await send('Browser.close').catch(() => {});
} catch (e) {
  result.error = `${e.message}; stderr: ${browserStderr}`;
  exitCode = 1;
}
result.done = true;
finish(exitCode);
