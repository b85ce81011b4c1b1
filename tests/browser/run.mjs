#!/usr/bin/env node
// Drives Debian's Chromium (through playwright-core, no downloaded browser) against a
// TURN server: relay-only RTCPeerConnection pairs in one page, over TURN/UDP, TURN/TCP
// and TURNS (TLS), a wrong-password run and a fake-camera video run; `udp-host-b` (not
// in the default runs) pairs a relay-only connection over TURN/UDP with one that offers
// only its host address, so the relay's peer is a plain host (for the kernel fast path,
// which relays channels to such peers). `--visit URL` also opens URL in a tab of the
// same browser and reports the page's text (run `visit`): a website sharing the TURN
// server's TLS port.
//
// Usage: node run.mjs HOST PORT TLS_PORT USERNAME PASSWORD [--runs udp,tcp,tls,badauth,media] [--visit URL]
//   (or the env vars TURN_HOST, TURN_PORT, TURN_TLS_PORT, TURN_USER, TURN_PASS, RUNS;
//    CHROMIUM overrides /usr/bin/chromium).
// Prints one JSON line per run ({"run": ..., "pass": bool, ...}) and exits 1 if any fails.
// No external network: the page is served from 127.0.0.1 by this script.

import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { launchChromium, watchdog, emit } from './launch.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));

function parseArgs(argv) {
  const positional = [];
  let runs = process.env.RUNS || 'udp,tcp,tls,badauth,media';
  let visit = null;
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--runs') runs = argv[++i];
    else if (argv[i] === '--visit') visit = argv[++i];
    else if (argv[i].startsWith('--runs=')) runs = argv[i].slice('--runs='.length);
    else positional.push(argv[i]);
  }
  const [host, port, tlsPort, user, pass] = positional;
  const cfg = {
    host: host || process.env.TURN_HOST || '127.0.0.1',
    port: port || process.env.TURN_PORT,
    tlsPort: tlsPort || process.env.TURN_TLS_PORT,
    user: user || process.env.TURN_USER,
    pass: pass || process.env.TURN_PASS,
    runs: runs.split(',').map((r) => r.trim()).filter(Boolean),
    visit,
  };
  if (!cfg.port || !cfg.user || !cfg.pass || (cfg.runs.includes('tls') && !cfg.tlsPort)) {
    console.error('usage: node run.mjs HOST PORT TLS_PORT USERNAME PASSWORD [--runs udp,tcp,tls,badauth,media]');
    process.exit(2);
  }
  return cfg;
}

// Serves page.html at / on 127.0.0.1 (a secure context for getUserMedia).
function servePage() {
  const html = fs.readFileSync(path.join(here, 'page.html'));
  const server = http.createServer((req, res) => {
    if (req.url === '/favicon.ico') {
      res.writeHead(204);
      res.end();
    } else if (req.url === '/' || req.url === '/index.html') {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
      res.end(html);
    } else {
      res.writeHead(404);
      res.end();
    }
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve(server));
  });
}

const cfg = parseArgs(process.argv.slice(2));
const udpUrl = `turn:${cfg.host}:${cfg.port}?transport=udp`;
const tcpUrl = `turn:${cfg.host}:${cfg.port}?transport=tcp`;
const tlsUrl = `turns:${cfg.host}:${cfg.tlsPort}?transport=tcp`;

const server = await servePage();
const stopWatchdog = watchdog(150_000, 'run.mjs');
let browser;
let failed = 0;

function report(run, pass, result) {
  if (!pass) failed++;
  emit({ run, pass, ...result });
}

// The checks for a data run: all messages in order, the selected local candidates are
// relays over the expected protocol (b's is its host address with `bHost`).
function checkData(result, relayProtocol, bHost) {
  const problems = [];
  if (!result.ok) problems.push(`data exchange failed: ${result.error || 'messages missing or out of order'}`);
  if (bHost && result.ok && !result.selectedB) problems.push('selectedB: no selected candidate pair');
  if (bHost && result.selectedB && result.selectedB.local.candidateType !== 'host') {
    problems.push(`selectedB: local candidateType ${result.selectedB.local.candidateType}, want host`);
  }
  for (const side of bHost ? ['selectedA'] : ['selectedA', 'selectedB']) {
    const sel = result[side];
    if (!sel) {
      if (result.ok) problems.push(`${side}: no selected candidate pair`);
      continue;
    }
    if (sel.local.candidateType !== 'relay') problems.push(`${side}: local candidateType ${sel.local.candidateType}, want relay`);
    if (sel.local.relayProtocol !== relayProtocol) problems.push(`${side}: relayProtocol ${sel.local.relayProtocol}, want ${relayProtocol}`);
  }
  return problems;
}

try {
  // Host candidates as addresses, not mDNS names, which a TURN server cannot resolve
  // (only `udp-host-b` gathers any).
  browser = await launchChromium('run', ['--disable-features=WebRtcHideLocalIpsWithMdns']);
  const { page } = browser;
  await page.goto(`http://127.0.0.1:${server.address().port}/`);
  await page.waitForFunction(() => window.pageReady === true, null, { timeout: 10_000 });

  const creds = { username: cfg.user, credential: cfg.pass };
  const dataRuns = {
    udp: [udpUrl, 'udp'], tcp: [tcpUrl, 'tcp'], tls: [tlsUrl, 'tls'], 'udp-host-b': [udpUrl, 'udp', true],
  };
  for (const run of cfg.runs) {
    if (dataRuns[run]) {
      const [url, relayProtocol, bHost = false] = dataRuns[run];
      const result = await page.evaluate((a) => window.runData(a), { url, ...creds, count: 50, timeoutMs: 20_000, bHost });
      const problems = checkData(result, relayProtocol, bHost);
      report(run, problems.length === 0, { relayProtocol: result.selectedA?.local?.relayProtocol, problems, ...result });
    } else if (run === 'badauth') {
      const result = await page.evaluate((a) => window.runBadAuth(a), {
        url: udpUrl, username: cfg.user, credential: `${cfg.pass}-wrong`, timeoutMs: 15_000,
      });
      const problems = [];
      if (!result.ended) problems.push('no icecandidateerror and no failed state within 15 s');
      if (result.outcome === 'icecandidateerror' && result.errorCode !== 401) problems.push(`errorCode ${result.errorCode}, want 401`);
      const relays = [...result.candidates.a, ...result.candidates.b].filter((c) => / typ relay /.test(c));
      if (relays.length) problems.push(`got relay candidates with a wrong password: ${relays.join(' | ')}`);
      report(run, problems.length === 0, { problems, ...result });
    } else if (run === 'media') {
      const result = await page.evaluate((a) => window.runMedia(a), { url: udpUrl, ...creds, timeoutMs: 20_000 });
      const problems = [];
      if (!result.ok) problems.push(`no decoded frames: ${result.error}`);
      if (result.ok && result.selectedA?.local?.candidateType !== 'relay') problems.push('sender not on a relay candidate');
      if (result.ok && result.selectedA?.local?.relayProtocol !== 'udp') problems.push(`sender relayProtocol ${result.selectedA?.local?.relayProtocol}, want udp`);
      report(run, problems.length === 0, { relayProtocol: result.selectedA?.local?.relayProtocol, problems, ...result });
    } else {
      report(run, false, { problems: [`unknown run ${run}`] });
    }
  }
  if (cfg.visit) {
    const tab = await browser.page.context().newPage();
    try {
      const response = await tab.goto(cfg.visit, { timeout: 10_000 });
      const text = (await tab.textContent('body', { timeout: 5_000 })) || '';
      report('visit', response?.status() === 200, { status: response?.status(), text: text.trim() });
    } catch (e) {
      report('visit', false, { error: String(e) });
    } finally {
      await tab.close();
    }
  }
  console.error(`run.mjs: chromium ${browser.version || '?'}, ${failed} failed`);
} catch (e) {
  failed++;
  emit({ run: 'driver', pass: false, error: String(e && e.stack || e) });
} finally {
  stopWatchdog();
  if (browser) await browser.close();
  server.close();
}
process.exit(failed ? 1 : 0);
