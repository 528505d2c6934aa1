// The web dashboard in a real browser (Debian's Chromium, headless, driven by
// playwright-core) against a real daemon on TCP and a real microVM: sign in
// with an API key, create a sandbox, run a command in its terminal, upload a
// file, watch its charts fill, kill it and see the state change with no
// reload; and `capsule dashboard`'s one-time link signs in exactly once.
// DASHBOARD_SCREENSHOT=<file> also saves the sandbox page (docs/dashboard.png).
import fs from 'node:fs';
import path from 'node:path';
import { type Browser, chromium, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect } from 'vitest';
import { dashboardDist } from '../src/repo-paths.js';
import { eventually, it, runCli, TestDaemon } from './fixture.js';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';

describe('the dashboard in Chromium (real daemon, real microVM)', () => {
  const daemon = new TestDaemon({ CAPSULE_LISTEN: 'http://127.0.0.1:0', CAPSULE_METRICS_INTERVAL_MS: '1000' });
  let browser: Browser;
  let base: string;
  let apiKey: string;
  /** What the pages said on their console: a Content-Security-Policy violation would show here. */
  const consoleErrors: string[] = [];

  beforeAll(async () => {
    if (!fs.existsSync(path.join(dashboardDist, 'index.html'))) throw new Error(`${dashboardDist} is not built: run npm run build`);
    await daemon.start();
    base = `http://${(await daemon.api.info()).tcpAddress}`;
    apiKey = (await daemon.api.createApiKey('dashboard-test')).key;
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true });
  });
  afterAll(async () => {
    await browser?.close();
    await daemon.destroy();
  });

  const newPage = async (): Promise<Page> => {
    const page = await (await browser.newContext({ viewport: { width: 1280, height: 1100 } })).newPage();
    page.on('console', (message) => {
      if (message.type() === 'error') consoleErrors.push(message.text());
    });
    return page;
  };

  it('signs in with a key; creates a sandbox; its terminal runs a command; a file uploads; charts fill; a kill shows live', async () => {
    const page = await newPage();
    await page.goto(`${base}/ui/`);
    await page.fill('input[name=apiKey]', apiKey);
    await page.click('button:has-text("Sign in")');
    await page.waitForSelector('[data-testid=sandboxes]');

    await page.click('button:has-text("Create sandbox")');
    await page.waitForURL(/\/ui\/sandboxes\/sb_/, { timeout: 180_000 });
    const sandboxId = decodeURIComponent(new URL(page.url()).pathname.split('/').pop() ?? '');
    // A mark that a reload would wipe: everything from here on happens in this one page load.
    await page.evaluate(() => Object.assign(globalThis, { stillTheSamePage: true }));

    await page.waitForSelector('text=Terminal: connected', { timeout: 60_000 });
    // The terminal's lines as xterm.js renders them (one element per row).
    const lines = () => page.locator('[data-testid=terminal] .xterm-rows > div').allTextContents();
    // The shell's first prompt, then the command typed as a person would.
    await eventually(async () => ((await lines()).some((line) => line.trim() !== '') ? true : undefined), 60_000, 'the shell prompt');
    await page.locator('[data-testid=terminal]').click();
    await page.keyboard.type('echo $((6*7))\n');
    await eventually(async () => ((await lines()).some((line) => line.trim() === '42') ? true : undefined), 30_000, '42 in the terminal');

    await page.setInputFiles('input[name=upload]', {
      name: 'from-the-browser.txt',
      mimeType: 'text/plain',
      buffer: Buffer.from('uploaded through the dashboard\n'),
    });
    await page.waitForSelector('[data-file="from-the-browser.txt"]', { timeout: 30_000 });
    const uploaded = await daemon.api.exec(sandboxId, ['cat', '/tmp/from-the-browser.txt']);
    expect(uploaded.stdout).toBe('uploaded through the dashboard\n');

    const cpuPoints = () => page.locator('[data-testid=charts] figure').first().getAttribute('data-points');
    await eventually(async () => (Number(await cpuPoints()) >= 3 ? true : undefined), 60_000, 'three points on the CPU chart');
    if (process.env.DASHBOARD_SCREENSHOT) await page.screenshot({ path: process.env.DASHBOARD_SCREENSHOT, fullPage: false });

    // Back to the list through the page's own link, and the kill from there.
    await page.click('nav a:has-text("Sandboxes")');
    const row = page.locator(`tr[data-sandbox="${sandboxId}"]`);
    await row.locator('[data-state=running]').waitFor();
    await row.locator('button:has-text("Kill")').click();
    await row.locator('[data-state=killed]').waitFor({ timeout: 60_000 });
    expect(await page.evaluate(() => (globalThis as { stillTheSamePage?: boolean }).stillTheSamePage)).toBe(true);
    expect((await daemon.api.sandbox(sandboxId)).state).toBe('killed');
    expect(consoleErrors.filter((text) => /Content Security Policy/i.test(text))).toEqual([]);
  });

  it("`capsule dashboard`'s one-time link signs a browser in, and only once", async () => {
    const cli = await runCli(daemon, ['dashboard', '--no-open']);
    expect(cli.stderr).toBe('');
    expect(cli.status).toBe(0);
    const link = cli.stdout.split('\n')[0] ?? '';
    expect(link).toMatch(new RegExp(`^${base}/ui/sign-in\\?token=[\\w-]+$`));

    const first = await newPage();
    await first.goto(link);
    await first.waitForSelector('[data-testid=sandboxes]');
    // The token left the address bar.
    expect(first.url()).toBe(`${base}/ui/`);

    const second = await newPage();
    await second.goto(link);
    await second.waitForSelector('text=That sign-in link was used already');
    expect(await second.locator('input[name=apiKey]').count()).toBe(1);
  });
});
