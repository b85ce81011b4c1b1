#!/usr/bin/env node
// Opens tern's self-test check page (/check?token=...) in headless Chromium and prints
// one JSON line: {"status": <HTTP status of the page>, "result": window.selftestResult}
// (result is null when the page did not load with 200).
//
// Usage: node check.mjs URL
// Exits 0 once it has a result (whatever the verdict: the caller judges it), 1 when the
// page never finished, 3 on the overall timeout.

import { launchChromium, open, watchdog, emit } from './launch.mjs';

// The page bounds itself (10 s per transport in parallel, 20 s for the call).
const RESULT_TIMEOUT_MS = 60_000;

const url = process.argv[2];
if (!url) {
  console.error('usage: node check.mjs URL');
  process.exit(2);
}

const stopWatchdog = watchdog(90_000, 'check.mjs');
const browser = await launchChromium('check');
let code = 0;
try {
  const status = await open(browser.page, url);
  let result = null;
  if (status === 200) {
    await browser.page.waitForFunction(() => window.selftestResult && window.selftestResult.done, null,
      { timeout: RESULT_TIMEOUT_MS });
    result = await browser.page.evaluate(() => window.selftestResult);
    result.verdictAttribute = await browser.page.getAttribute('#verdict', 'data-verdict');
  }
  emit({ status, result, chromium: browser.version });
} catch (e) {
  code = 1;
  emit({ error: String((e && e.stack) || e) });
} finally {
  stopWatchdog();
  await browser.close();
}
process.exit(code);
