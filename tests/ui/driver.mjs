// Headless Chromium for tests/ui.rs, driven over stdio: one JSON request a
// line in ({"id", "cmd", ...}), one JSON reply a line out ({"id", "ok",
// "value" | "error"}). Uses Debian's /usr/bin/chromium through
// playwright-core (scripts/setup-browser.sh installs both).
//
//   node tests/ui/driver.mjs USER_DATA_DIR
//
// Commands: goto {url}; eval {expr}; wait {expr, timeout_ms} (polls until
// expr is truthy); fill {selector, value}; click {selector}; submit {selector}
// (clicks and waits for the page it leads to);
// screenshot {path}; log (what the page recorded, see RECORDER).
import { createInterface } from 'node:readline';
import { chromium } from 'playwright-core';

const userDataDir = process.argv[2];
if (!userDataDir) throw new Error('usage: driver.mjs USER_DATA_DIR');

const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
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
  viewport: { width: 900, height: 640 },
  colorScheme: 'light',
});

// Runs in the page before its own script: records every state of the status
// line and the caption list (one entry per DOM change), and CSP violations.
const RECORDER = () => {
  const ui = (window.__ui = { history: [], violations: [] });
  addEventListener('securitypolicyviolation', (e) =>
    ui.violations.push(`${e.effectiveDirective} ${e.blockedURI}`),
  );
  const ids = new WeakMap(); // element -> stable id: tells replacement in place
  let count = 0;
  const idOf = (el) => {
    if (!ids.has(el)) ids.set(el, ++count);
    return ids.get(el);
  };
  const snapshot = () => {
    const captions = [...document.querySelectorAll('#captions > li')].map((li) => ({
      id: idOf(li),
      class: li.className,
      text: li.querySelector('.text')?.textContent ?? '',
    }));
    const entry = { status: document.getElementById('status')?.dataset.state ?? '', captions };
    const last = ui.history.at(-1);
    if (!last || JSON.stringify(last) !== JSON.stringify(entry)) ui.history.push(entry);
  };
  document.addEventListener('DOMContentLoaded', () => {
    snapshot();
    new MutationObserver(snapshot).observe(document.body, {
      subtree: true,
      childList: true,
      attributes: true,
      characterData: true,
    });
  });
};
await context.addInitScript(RECORDER);

const page = context.pages()[0] ?? (await context.newPage());
const requests = [];
const consoleLines = [];
const errors = [];
page.on('request', (r) => requests.push(r.url()));
page.on('websocket', (ws) => requests.push(ws.url()));
page.on('console', (m) => consoleLines.push(`${m.type()}: ${m.text()} (${m.location().url})`));
page.on('pageerror', (e) => errors.push(String(e)));

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const commands = {
  async goto({ url }) {
    const resp = await page.goto(url, { waitUntil: 'load' });
    return { status: resp?.status() ?? 0 };
  },
  eval: ({ expr }) => page.evaluate(expr),
  async wait({ expr, timeout_ms = 10000 }) {
    const deadline = Date.now() + timeout_ms;
    let value;
    while (Date.now() < deadline) {
      try {
        value = await page.evaluate(expr);
      } catch (e) {
        // The page navigated (a script's redirect) while we asked: ask again.
        if (!String(e?.message).includes('Execution context was destroyed')) throw e;
        value = undefined;
      }
      if (value) return value;
      await sleep(25);
    }
    const dump = await page.evaluate(() => ({
      status: document.getElementById('status')?.textContent,
      captions: [...document.querySelectorAll('#captions > li')].map((li) => `${li.className}: ${li.textContent}`),
    }));
    throw new Error(`timed out after ${timeout_ms} ms waiting for ${expr}; page: ${JSON.stringify(dump)}`);
  },
  fill: ({ selector, value }) => page.fill(selector, value),
  click: ({ selector }) => page.click(selector),
  async submit({ selector }) {
    await Promise.all([page.waitForNavigation({ waitUntil: 'load' }), page.click(selector)]);
    return { url: page.url() };
  },
  screenshot: ({ path }) => page.screenshot({ path, fullPage: true }),
  async log() {
    const recorded = await page.evaluate(() => window.__ui);
    return { ...recorded, requests, console: consoleLines, errors };
  },
};

const reply = (msg) => process.stdout.write(`${JSON.stringify(msg)}\n`);
reply({ ready: true });
for await (const line of createInterface({ input: process.stdin })) {
  if (!line.trim()) continue;
  const { id, cmd, ...args } = JSON.parse(line);
  try {
    if (!commands[cmd]) throw new Error(`unknown command ${cmd}`);
    reply({ id, ok: true, value: (await commands[cmd](args)) ?? null });
  } catch (e) {
    reply({ id, ok: false, error: String(e?.message ?? e) });
  }
}
await context.close();
