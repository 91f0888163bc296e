/**
 * A real browser for the console's tests: Debian's chromium, headless, driven by puppeteer-core (nothing
 * downloads a browser). Screenshots go to `test-artifacts/<suite>/` (kept after the run, ignored by git).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import puppeteer, { type Browser, type Page } from 'puppeteer-core';

/** Where Debian installs chromium (`apt-get install chromium`; `.ci/run` does). */
export const CHROMIUM = process.env.WANAS_CHROMIUM ?? '/usr/bin/chromium';

/** Starts headless chromium; `insecureTls` accepts the test CA's self-signed chain. */
export function launchBrowser(opts: { insecureTls?: boolean } = {}): Promise<Browser> {
  if (!fs.existsSync(CHROMIUM))
    throw new Error(`no browser at ${CHROMIUM}: apt-get install chromium (or set WANAS_CHROMIUM)`);
  return puppeteer.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--no-sandbox', // as root in CI
      '--disable-dev-shm-usage',
      '--disable-gpu',
      ...(opts.insecureTls ? ['--ignore-certificate-errors'] : []),
    ],
  });
}

/** Saves a screenshot of `page` as `test-artifacts/<suite>/<name>.png`; returns its path. */
export async function screenshot(page: Page, suite: string, name: string): Promise<string> {
  const dir = path.resolve(__dirname, '../../test-artifacts', suite);
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, `${name}.png`);
  await page.screenshot({ path: file as `${string}.png`, fullPage: true });
  return file;
}
