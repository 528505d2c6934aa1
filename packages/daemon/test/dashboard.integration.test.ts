// The web dashboard in a real browser (Debian's Chromium, headless, driven by
// playwright-core) against a real daemon on TCP and a real microVM: sign in
// with an API key, create a sandbox, run a command in its terminal, upload a
// file, watch its charts fill, snapshot it, kill it and see the state change
// with no reload; build a template and pull an image (from a registry on
// loopback) with their logs live; see a workload applied
// through the API become Ready, read its log and stop it; see a volume; and
// `capsule dashboard`'s one-time link signs in exactly once.
// DASHBOARD_SCREENSHOT=<file> also saves the sandbox page (docs/dashboard.png).
import fs from 'node:fs';
import path from 'node:path';
import { type Browser, chromium, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect } from 'vitest';
import { dashboardDist } from '../src/repo-paths.js';
import { eventually, it, runCli, TestDaemon } from './fixture.js';
import { image, layer, marker, pushImage } from './oci/test-images.js';
import { TestRegistry } from './oci/test-registry.js';

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

  const signedInPage = async (): Promise<Page> => {
    const page = await newPage();
    await page.goto(`${base}/ui/`);
    await page.fill('input[name=apiKey]', apiKey);
    await page.click('button:has-text("Sign in")');
    await page.waitForSelector('[data-testid=sandboxes]');
    return page;
  };

  it('signs in with a key; creates a sandbox; its terminal runs a command; a file uploads; charts fill; a snapshot and a kill show live', async () => {
    const page = await signedInPage();

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

    // The snapshot asks for its template's name in place, and the template is there for the API.
    await page.click('button:has-text("Snapshot")');
    await page.fill('input[name=snapshotTemplate]', 'snapshot-from-the-browser');
    await page.click('button:has-text("Save snapshot")');
    await page.waitForSelector('[data-snapshot="snapshot-from-the-browser"]', { timeout: 180_000 });
    expect((await daemon.api.templates()).map((t) => t.name)).toContain('snapshot-from-the-browser');

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

  /** On the templates page: a build from a Capsulefile, then a pull of `ref`, each log read as it streams. */
  const buildAndPull = async (ref: string) => {
    const page = await signedInPage();
    await page.click('nav a:has-text("Templates")');
    await page.waitForSelector('[data-testid=templates] tr[data-template=base]');
    await page.waitForSelector('[data-testid=images]');
    await page.fill('input[name=buildName]', 'built-in-the-browser');
    // A step of this run's own: the build-step cache is shared by every daemon on the host, and a step an
    // earlier run cached would finish at once with no output (the template-service test prunes the cache).
    const nonce = `${process.pid}-${Date.now()}`;
    await page.fill('textarea[name=capsulefile]', `FROM base\nRUN echo "built by the $((6*7))th dashboard, run ${nonce}"\n`);
    await page.click('button:has-text("Build")');
    const log = page.locator('[data-testid=build-log]');
    // The step's own output, as the build ran (the command text alone has no 42).
    await log.locator(`text=built by the 42th dashboard, run ${nonce}`).waitFor({ timeout: 150_000 });
    await log.locator('text=Built template built-in-the-browser').waitFor({ timeout: 150_000 });
    // The list follows the event stream: the new template shows with no reload.
    await page.waitForSelector('[data-testid=templates] tr[data-template=built-in-the-browser]');
    expect((await daemon.api.templates()).map((t) => t.name)).toContain('built-in-the-browser');

    // A pull from a registry on loopback: its progress in the log, then the image in the list by the event stream.
    await page.fill('input[name=imageRef]', ref);
    await page.click('button:has-text("Pull")');
    const pullLog = page.locator('[data-testid=pull-log]');
    await pullLog.locator('text=Resolved sha256:').waitFor({ timeout: 60_000 });
    await pullLog.locator(`text=Pulled ${ref}`).waitFor({ timeout: 60_000 });
    await page.locator('[data-testid=images] tr', { hasText: ref }).waitFor();
  };

  it('builds a template and pulls an image, each with its log live, and lists them', async () => {
    const registry = await TestRegistry.start();
    const ref = `${registry.host}/e2e/dashboard:v1`;
    await pushImage(registry, 'e2e/dashboard', 'v1', image([layer([marker()])]));
    try {
      await buildAndPull(ref);
    } finally {
      const pulled = (await daemon.api.images()).find((i) => i.refs.includes(ref));
      if (pulled) await daemon.request('DELETE', `/v1/images/${pulled.digest}`);
      await registry.stop();
    }
  });

  it('shows a workload applied through the API become Ready, its log, and stops it; lists a volume', async () => {
    const applied = await daemon.request('POST', '/v1/workloads/apply', {
      documents: [
        { kind: 'Workload', name: 'greeter', template: 'base', command: ['sh', '-c', 'echo served-by-the-workload; exec sleep 3600'] },
      ],
    });
    expect(applied.status, applied.text).toBe(200);
    const volume = await daemon.request('POST', '/v1/volumes', { name: 'browser-data', size: '64M' });
    expect(volume.status, volume.text).toBe(201);
    try {
      const page = await signedInPage();
      await page.click('nav a:has-text("Workloads")');
      const row = page.locator('tr[data-workload=greeter]');
      await row.locator('[data-condition=Ready][data-status=true]').waitFor({ timeout: 180_000 });
      expect(await row.locator('[data-restarts]').textContent()).toBe('0');
      await row.locator('button:has-text("Logs")').click();
      await page.locator('[data-testid=workload-log]').locator('text=served-by-the-workload').waitFor({ timeout: 30_000 });

      await row.locator('button:has-text("Stop")').click();
      await row.locator('[data-wanted=stopped]').waitFor({ timeout: 120_000 });
      await row.locator('[data-condition=Ready][data-status=false]').waitFor({ timeout: 120_000 });
      expect((await daemon.request('GET', '/v1/workloads/greeter')).body.state).toBe('stopped');
      // ("Restart" holds "start" too: the button whose text is exactly Start.)
      await row.locator('button:text-is("Start")').click();
      await row.locator('[data-condition=Ready][data-status=true]').waitFor({ timeout: 180_000 });
      expect((await daemon.request('GET', '/v1/workloads/greeter')).body.state).toBe('running');

      await page.click('nav a:has-text("Volumes")');
      await page.waitForSelector('text=browser-data');
    } finally {
      await daemon.request('DELETE', '/v1/workloads/greeter');
    }
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
