// Shared by the browser drivers (run.mjs, check.mjs, call.mjs): starts Debian's
// Chromium through playwright-core (no downloaded browser) in a throwaway profile,
// bounds the whole run, and prints results as JSON lines.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';

// Flags that work as root in a container: no sandbox, no GPU, no background traffic
// to anything but the pages under test; the test certificate is self-signed; the fake
// camera and an auto-accepted permission prompt stand in for a person.
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--ignore-certificate-errors',
  '--use-fake-device-for-media-stream',
  '--use-fake-ui-for-media-stream',
];

// Launches Chromium (CHROMIUM overrides /usr/bin/chromium), with `extraArgs` after the
// flags above, and returns its first page, with the page's errors echoed to stderr
// under `label`, and `close()` which also removes the profile.
export async function launchChromium(label, extraArgs = []) {
  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tern-chromium-'));
  let context;
  try {
    context = await chromium.launchPersistentContext(userDataDir, {
      executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
      headless: true,
      args: [...CHROMIUM_ARGS, ...extraArgs],
      timeout: 30_000,
    });
  } catch (e) {
    fs.rmSync(userDataDir, { recursive: true, force: true });
    throw e;
  }
  const page = context.pages()[0] || (await context.newPage());
  page.on('console', (msg) => {
    if (msg.type() === 'error') console.error(`${label} console: ${msg.text()}`);
  });
  page.on('pageerror', (err) => console.error(`${label} page error: ${err}`));
  return {
    page,
    version: context.browser() ? context.browser().version() : undefined,
    async close() {
      await context.close().catch(() => {});
      fs.rmSync(userDataDir, { recursive: true, force: true });
    },
  };
}

// Navigates to `url` and returns the HTTP status of the page itself. Chromium turns an
// error status with an empty body into a navigation error; the status is still known.
// A refused connection is retried for up to 10 s: the server may still be starting.
export async function open(page, url) {
  let status = null;
  const onResponse = (response) => {
    if (response.request().isNavigationRequest() && response.frame() === page.mainFrame()) status = response.status();
  };
  page.on('response', onResponse);
  const deadline = Date.now() + 10_000;
  try {
    for (;;) {
      try {
        await page.goto(url, { timeout: 15_000 });
        return status;
      } catch (e) {
        if (status !== null) return status;
        if (!/ERR_CONNECTION_REFUSED/.test(String(e)) || Date.now() > deadline) throw e;
        await new Promise((resolve) => setTimeout(resolve, 250));
      }
    }
  } finally {
    page.off('response', onResponse);
  }
}

// Exits with status 3 after `ms`, so a stuck browser never hangs the caller.
export function watchdog(ms, label) {
  const timer = setTimeout(() => {
    console.error(`${label}: overall timeout (${ms / 1000} s)`);
    process.exit(3);
  }, ms);
  return () => clearTimeout(timer);
}

// One result line on stdout, the format the Rust tests parse.
export function emit(result) {
  console.log(JSON.stringify(result));
}

// `--name value` options after the positional arguments: { positional, options }.
export function parseOptions(argv, names) {
  const positional = [];
  const options = {};
  for (let i = 0; i < argv.length; i++) {
    const name = argv[i].startsWith('--') ? argv[i].slice(2) : null;
    if (name !== null && names.includes(name)) options[name] = argv[++i];
    else positional.push(argv[i]);
  }
  return { positional, options };
}
