#!/usr/bin/env node
// Joins a tern self-test call room (/call?room=...&token=...) in headless Chromium with
// the fake camera, and prints one JSON line per phase:
//   {"phase":"loaded","status":N}          the page did not load with 200 (then it exits)
//   {"phase":"connected","state":{...}}    in a call, video decoded (window.callState)
//   {"phase":"error","state":{...}}        the page reported an error (room full, ...)
//   {"phase":"hung-up"|"peer-left","state":{...}}   after --then (see below)
//
// Usage: node call.mjs URL [--hold FILE] [--then hangup|peer-left]
//   --hold FILE  once connected, stay in the call until FILE exists (at most 90 s)
//   --then hangup     then press the hang-up button
//   --then peer-left  then wait until the other person has left and the page waits again
// Exits 0 when every phase it waited for happened, 1 otherwise, 3 on the overall timeout.

import fs from 'node:fs';
import { launchChromium, open, watchdog, emit, parseOptions } from './launch.mjs';

const JOIN_TIMEOUT_MS = 45_000;
const HOLD_TIMEOUT_MS = 90_000;
const PEER_LEFT_TIMEOUT_MS = 30_000;

const { positional, options } = parseOptions(process.argv.slice(2), ['hold', 'then']);
const url = positional[0];
if (!url || (options.then && !['hangup', 'peer-left'].includes(options.then))) {
  console.error('usage: node call.mjs URL [--hold FILE] [--then hangup|peer-left]');
  process.exit(2);
}

const state = (page) => page.evaluate(() => window.callState);

// Joined (connected with decoded video) or refused: whichever the page reports first.
async function join(page) {
  await page.waitForFunction(
    () => window.callState && (window.callState.error
      || (window.callState.connected && window.callState.framesDecoded > 0 && window.callState.pair)),
    null, { timeout: JOIN_TIMEOUT_MS, polling: 250 });
  const s = await state(page);
  emit({ phase: s.error ? 'error' : 'connected', state: s });
}

// Bounded wait for a file the caller writes when the other participants are done.
async function hold(file) {
  const deadline = Date.now() + HOLD_TIMEOUT_MS;
  while (!fs.existsSync(file)) {
    if (Date.now() > deadline) throw new Error(`${file} did not appear within ${HOLD_TIMEOUT_MS / 1000} s`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

async function then(page, what) {
  if (what === 'hangup') {
    await page.click('#hangup');
  } else {
    await page.waitForFunction(() => window.callState.peersLeft > 0 && window.callState.status === 'waiting',
      null, { timeout: PEER_LEFT_TIMEOUT_MS, polling: 250 });
  }
  emit({ phase: what === 'hangup' ? 'hung-up' : 'peer-left', state: await state(page) });
}

const stopWatchdog = watchdog(180_000, 'call.mjs');
const browser = await launchChromium('call');
let code = 0;
try {
  const status = await open(browser.page, url);
  if (status !== 200) {
    emit({ phase: 'loaded', status });
  } else {
    await join(browser.page);
    if (options.hold) await hold(options.hold);
    if (options.then) await then(browser.page, options.then);
  }
} catch (e) {
  code = 1;
  const s = await state(browser.page).catch(() => null);
  emit({ phase: 'failed', error: String((e && e.message) || e), state: s });
} finally {
  stopWatchdog();
  await browser.close();
}
process.exit(code);
