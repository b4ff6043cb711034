#!/usr/bin/env node
// Browser end-to-end test of berth's web UI (/ui/), run by e2e/ui.sh after it seeded a registry
// (see ui.sh for the projects, users and images). Headless Chromium through playwright-core;
// plain node:assert and a tiny runner: every check prints one "PASS: name" or "FAIL: name" line
// (details indented below a FAIL, plus a screenshot fail-NN-*.png of the page it was on), then
// "SUMMARY: N passed, M failed"; the exit code is 1 if any check failed.
//
// Environment (ui.sh sets all of it):
//   BERTH_URL                    http://127.0.0.1:PORT
//   BERTH_REALM, BERTH_SERVICE   the token endpoint (registry API checks use bearer tokens)
//   UI_ALICE_USER/UI_ALICE_TOKEN Developer in demo/public and demo/private
//   UI_BOB_USER/UI_BOB_TOKEN     Reporter in demo/private
//   UI_SEED_JSON                 what ui.sh pushed (digests, tags, artifact, many.count)
//   SCREENSHOT_DIR               where full-page PNGs go (default ../../artifacts/ui)
//   CHROMIUM                     browser binary (default /usr/bin/chromium)
//   UI_ACTION_TIMEOUT_MS (10000), UI_NAV_TIMEOUT_MS (15000), UI_HEADED=1
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const HERE = path.dirname(fileURLToPath(import.meta.url));
// axe-core (Deque's accessibility rules engine), injected into pages for the WCAG checks
const AXE_JS = createRequire(import.meta.url).resolve('axe-core/axe.min.js');
function env(name, dflt) {
  const v = process.env[name] ?? dflt;
  if (v === undefined || v === '') {
    console.log(`FAIL: environment variable ${name} is not set (run through e2e/ui.sh)`);
    process.exit(2);
  }
  return v;
}
const BASE = env('BERTH_URL').replace(/\/+$/, '');
const REALM = env('BERTH_REALM');
const SERVICE = env('BERTH_SERVICE');
const ALICE = { user: env('UI_ALICE_USER', 'alice'), token: env('UI_ALICE_TOKEN') };
const BOB = { user: env('UI_BOB_USER', 'bob'), token: env('UI_BOB_TOKEN') };
const SEED = JSON.parse(fs.readFileSync(env('UI_SEED_JSON'), 'utf8'));
const SHOTS = path.resolve(env('SCREENSHOT_DIR', path.join(HERE, '..', '..', 'artifacts', 'ui')));
const ACTION_MS = Number(env('UI_ACTION_TIMEOUT_MS', '10000'));
const NAV_MS = Number(env('UI_NAV_TIMEOUT_MS', '15000'));
fs.mkdirSync(SHOTS, { recursive: true });

const WEB = 'demo/public/web';
const API = 'demo/private/api';
const MANY = 'demo/public/many';
const SCRATCH = 'demo/public/scratch';
const WEB_TAGS = SEED.web_tags; // v1 v2 v3 multi latest v1-sig rc-01..rc-25
const MANY_COUNT = SEED.many.count;
const ARTIFACT = SEED.artifact; // {tag, digest, artifactType, subject}
const byName = (a, b) => (a < b ? -1 : a > b ? 1 : 0); // byte order, like the database

// ------------------------------------------------------------------ runner
let passed = 0;
let failed = 0;
let shotNo = 0;
let lastPage = null; // the page a failing check is reported with
const shots = [];

function track(page) { lastPage = page; return page; }

async function shot(page, name) {
  shotNo += 1;
  const file = path.join(SHOTS, `${String(shotNo).padStart(2, '0')}-${name}.png`);
  await page.screenshot({ path: file, fullPage: true, timeout: ACTION_MS });
  shots.push(file);
  return file;
}

function shorten(text, lines = 14) {
  const all = String(text).split('\n');
  return all.length > lines ? [...all.slice(0, lines), `... (${all.length - lines} more lines)`].join('\n') : text;
}

async function check(name, fn) {
  lastPage = null;
  const t0 = Date.now();
  try {
    await fn();
    passed += 1;
    console.log(`PASS: ${name}`);
  } catch (e) {
    failed += 1;
    console.log(`FAIL: ${name}`);
    const msg = e instanceof assert.AssertionError
      ? e.message + (e.generatedMessage || e.operator !== 'deepStrictEqual' ? ''
        : `\n  expected: ${JSON.stringify(e.expected)}\n  got     : ${JSON.stringify(e.actual)}`)
      : (e?.stack ?? String(e));
    console.log(shorten(msg).replace(/^/gm, '    '));
    if (lastPage && !lastPage.isClosed()) {
      console.log(`    page: ${lastPage.url()}`);
      try {
        const f = path.join(SHOTS, `fail-${String(failed).padStart(2, '0')}-${name.replace(/[^A-Za-z0-9]+/g, '-').slice(0, 60)}.png`);
        await lastPage.screenshot({ path: f, fullPage: true, timeout: 5000 });
        console.log(`    screenshot: ${f}`);
      } catch { /* the page may be gone */ }
    }
    console.log(`    (${Date.now() - t0} ms)`);
  }
}

// eq with a message that says what was compared and where
function eq(got, want, what) {
  assert.deepStrictEqual(got, want, `${what}${lastPage ? ` (at ${lastPage.url()})` : ''}`);
}
function ok(cond, what) {
  assert.ok(cond, `${what}${lastPage ? ` (at ${lastPage.url()})` : ''}`);
}

// ------------------------------------------------------------------ registry API (bearer tokens)
async function registryToken(who, scope) {
  const u = new URL(REALM);
  u.searchParams.set('service', SERVICE);
  u.searchParams.set('scope', scope);
  const headers = who ? { Authorization: 'Basic ' + Buffer.from(`${who.user}:${who.token}`).toString('base64') } : {};
  const r = await fetch(u, { headers });
  const body = await r.text();
  if (r.status !== 200) throw new Error(`token request GET ${u} as ${who?.user ?? 'anonymous'}: HTTP ${r.status}: ${body.slice(0, 300)}`);
  const j = JSON.parse(body);
  return j.token ?? j.access_token;
}
const MANIFEST_ACCEPT = [
  'application/vnd.oci.image.manifest.v1+json', 'application/vnd.oci.image.index.v1+json',
  'application/vnd.docker.distribution.manifest.v2+json', 'application/vnd.docker.distribution.manifest.list.v2+json',
].join(', ');
async function headManifest(who, repo, ref) {
  const tok = await registryToken(who, `repository:${repo}:pull`);
  const r = await fetch(`${BASE}/v2/${repo}/manifests/${ref}`, {
    method: 'HEAD', headers: { Authorization: `Bearer ${tok}`, Accept: MANIFEST_ACCEPT },
  });
  return { status: r.status, digest: r.headers.get('docker-content-digest'), type: r.headers.get('content-type') };
}
// tags of a repository through /v2/<repo>/tags/list (all pages); null if the repository is unknown
async function registryTags(who, repo) {
  const tok = await registryToken(who, `repository:${repo}:pull`);
  let url = `${BASE}/v2/${repo}/tags/list?n=1000`;
  const tags = [];
  while (url) {
    const r = await fetch(url, { headers: { Authorization: `Bearer ${tok}` } });
    if (r.status === 404) return null;
    if (r.status !== 200) throw new Error(`GET ${url}: HTTP ${r.status}: ${(await r.text()).slice(0, 300)}`);
    tags.push(...((await r.json()).tags ?? []));
    const link = r.headers.get('link');
    url = link && /rel="next"/.test(link) ? new URL(link.split(';')[0].trim().replace(/^<|>$/g, ''), BASE).href : null;
  }
  return tags;
}

// ------------------------------------------------------------------ page helpers
let browser;
async function newContext(opts = {}) {
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 900 }, ...opts });
  ctx.setDefaultTimeout(ACTION_MS);
  ctx.setDefaultNavigationTimeout(NAV_MS);
  return ctx;
}
async function newPage(ctx) { return track(await ctx.newPage()); }

// goto a path or URL; returns the final response; checks its status when `status` is given
async function open(page, url, status = 200) {
  track(page);
  const resp = await page.goto(new URL(url, BASE).href);
  if (status !== null && status !== undefined) {
    eq(resp?.status(), status, `HTTP status of GET ${url}`);
  }
  return resp;
}
// run `action` (a click that submits/navigates) and wait for the resulting page load
async function navigate(page, action) {
  track(page);
  const [resp] = await Promise.all([page.waitForNavigation({ waitUntil: 'load' }), action()]);
  return resp;
}
const pathOf = (page) => new URL(page.url()).pathname;
// paths compared with percent-encoding undone (demo%2Fpublic and demo%2fpublic are the same)
function eqPath(got, want, what) {
  const norm = (x) => decodeURIComponent(new URL(x, BASE).pathname);
  eq(norm(got), norm(want), what);
}
const queryOf = (page) => new URL(page.url()).searchParams;

async function h1(page) {
  const hs = await page.locator('h1').evaluateAll((els) => els.map((e) => e.textContent.replace(/\s+/g, ' ').trim()));
  eq(hs.length, 1, `number of <h1> elements (${JSON.stringify(hs)})`);
  return hs[0];
}
async function mainText(page) {
  return (await page.locator('body').innerText()).replace(/\s+/g, ' ');
}
async function accountText(page) {
  const nav = page.locator('nav[aria-label="Account"]');
  ok(await nav.count() === 1, 'one <nav aria-label="Account">');
  return (await nav.innerText()).replace(/\s+/g, ' ').trim();
}
async function noticeText(page, role) {
  return (await page.getByRole(role).evaluateAll((els) => els.map((e) => e.textContent.replace(/\s+/g, ' ').trim()))).join(' | ');
}
// the tag names of the rows (<tr data-tag>) in page order
async function rows(page) {
  return page.locator('tr[data-tag]').evaluateAll((trs) => trs.map((tr) => tr.dataset.tag));
}
// the number in #tag-count ("31 tags", "10,000 tags", "10 tags match")
async function tagCount(page) {
  const t = (await page.locator('#tag-count').textContent({ timeout: 2000 })) ?? '';
  const m = t.replace(/[\s,.\u00a0\u202f']/g, '').match(/\d+/);
  ok(m, `#tag-count holds a number: ${JSON.stringify(t)}`);
  return { n: Number(m[0]), text: t.trim() };
}
async function paginationText(page) {
  const nav = page.locator('nav[aria-label="Pagination"]');
  ok(await nav.count() === 1, 'one <nav aria-label="Pagination">');
  return (await nav.innerText()).replace(/\s+/g, ' ').trim();
}
// the table holding tr[data-tag] rows (or the first table), as [{key, cols: {Header: {text,title,datetime,code}}}]
async function readTable(page, rowSelector = 'tr[data-tag]') {
  return page.evaluate((sel) => {
    const first = document.querySelector(sel);
    const table = first ? first.closest('table') : document.querySelector('main table');
    if (!table) return { headers: [], rows: [] };
    const headers = [...table.querySelectorAll('thead th')].map((th) => th.textContent.replace(/\s+/g, ' ').trim());
    const trs = first ? [...table.querySelectorAll(sel)] : [...table.querySelectorAll('tbody tr')];
    const out = trs.map((tr) => {
      const cells = [...tr.children].filter((c) => c.tagName === 'TD' || c.tagName === 'TH');
      const off = Math.max(0, cells.length - headers.length);
      const cols = {};
      headers.forEach((h, i) => {
        const c = cells[i + off];
        if (!c) return;
        const code = c.querySelector('code');
        const time = c.querySelector('time');
        cols[h || `#${i}`] = {
          text: c.textContent.replace(/\s+/g, ' ').trim(),
          title: c.getAttribute('title') ?? c.querySelector('[title]')?.getAttribute('title') ?? null,
          code: code ? code.textContent.trim() : null,
          codeTitle: code ? code.getAttribute('title') : null,
          datetime: time ? time.getAttribute('datetime') : null,
        };
      });
      return { key: tr.dataset.tag ?? null, cols };
    });
    return { headers, rows: out };
  }, rowSelector);
}
// <dl> on the page as {dt text: {text, title, code}}
async function definitionList(page) {
  return page.evaluate(() => {
    const out = {};
    for (const dt of document.querySelectorAll('main dl dt')) {
      let dd = dt.nextElementSibling;
      while (dd && dd.tagName !== 'DD') dd = dd.nextElementSibling;
      if (!dd) continue;
      out[dt.textContent.replace(/\s+/g, ' ').trim()] = {
        text: dd.textContent.replace(/\s+/g, ' ').trim(),
        title: dd.getAttribute('title') ?? dd.querySelector('[title]')?.getAttribute('title') ?? null,
      };
    }
    return out;
  });
}
// what follows <h2>NAME</h2> up to the next h2 (or its <section>): text and its first table
async function section(page, name) {
  return page.evaluate((name) => {
    const h = [...document.querySelectorAll('main h2')].find((e) => e.textContent.replace(/\s+/g, ' ').trim() === name);
    if (!h) return null;
    let nodes = [];
    const sec = h.closest('section');
    if (sec && sec.querySelectorAll('h2').length === 1) nodes = [sec];
    else for (let n = h.nextElementSibling; n && n.tagName !== 'H2' && !n.querySelector('h2'); n = n.nextElementSibling) nodes.push(n);
    const text = nodes.map((n) => n.textContent).join(' ').replace(/\s+/g, ' ').trim();
    let table = null;
    for (const n of nodes) { table = n.tagName === 'TABLE' ? n : n.querySelector('table'); if (table) break; }
    const headers = table ? [...table.querySelectorAll('thead th')].map((th) => th.textContent.replace(/\s+/g, ' ').trim()) : [];
    const rows = table ? [...table.querySelectorAll('tbody tr')].map((tr) => {
      const o = {};
      [...tr.children].forEach((c, i) => { o[headers[i] ?? `#${i}`] = { text: c.textContent.replace(/\s+/g, ' ').trim(), title: c.querySelector('[title]')?.getAttribute('title') ?? c.getAttribute('title') }; });
      return o;
    }) : [];
    return { text, headers, rows };
  }, name);
}
// link hrefs on the page by accessible name (exact)
async function linkHref(page, name, scope = page) {
  const l = scope.getByRole('link', { name, exact: true });
  const n = await l.count();
  eq(n, 1, `number of links named ${JSON.stringify(name)}`);
  return new URL(await l.getAttribute('href'), page.url()).href;
}
// the tag-filter form: fill what is given, Apply, wait for the new page
async function applyTagFilter(page, { q, sort, order, kind, perPage }) {
  const form = page.locator('form[aria-label="Filter tags"]');
  eq(await form.count(), 1, 'number of <form aria-label="Filter tags">');
  if (q !== undefined) await form.getByLabel('Search tags', { exact: true }).fill(q);
  if (sort !== undefined) await form.getByLabel('Sort by', { exact: true }).selectOption(sort);
  if (order !== undefined) await form.getByLabel('Order', { exact: true }).selectOption(order);
  if (kind !== undefined) await form.getByLabel('Kind', { exact: true }).selectOption(kind);
  if (perPage !== undefined) await form.getByLabel('Per page', { exact: true }).selectOption(String(perPage));
  await navigate(page, () => form.getByRole('button', { name: 'Apply', exact: true }).click());
}
function withQuery(p, params) {
  const u = new URL(p, BASE);
  for (const [k, v] of Object.entries(params)) u.searchParams.set(k, String(v));
  return u.pathname + u.search;
}
// the csrf value of the "Sign out" form (any signed-in page)
async function signOutCsrf(page) {
  const input = page.locator('form').filter({ has: page.getByRole('button', { name: 'Sign out', exact: true }) }).locator('input[name="csrf"]');
  eq(await input.count(), 1, 'csrf input in the Sign out form');
  const v = await input.inputValue();
  ok(v.length >= 16, `csrf value looks like a token (${v.length} chars)`);
  return v;
}
async function signIn(ctx, who, next) {
  const page = await newPage(ctx);
  await open(page, next ? `/ui/login?next=${encodeURIComponent(next)}` : '/ui/login');
  await page.getByLabel('User name', { exact: true }).fill(who.user);
  await page.getByLabel('Personal access token', { exact: true }).fill(who.token);
  const resp = await navigate(page, () => page.getByRole('button', { name: 'Sign in', exact: true }).click());
  eq(resp?.status(), 200, `status of the page after signing in as ${who.user}`);
  ok(!pathOf(page).startsWith('/ui/login'), `signed in as ${who.user}: left the login page (alerts: ${await noticeText(page, 'alert')})`);
  return page;
}
// page structure and labels (the accessibility checks of every page type)
async function structureProblems(page) {
  return page.evaluate(() => {
    const problems = [];
    const txt = (e) => (e?.textContent ?? '').replace(/\s+/g, ' ').trim();
    const links = [...document.querySelectorAll('a')];
    const skip = links.find((a) => txt(a) === 'Skip to content');
    if (!skip) problems.push('no "Skip to content" link');
    else if (skip.getAttribute('href') !== '#main') problems.push(`"Skip to content" href=${skip.getAttribute('href')}, want #main`);
    const home = [...document.querySelectorAll('header a')].find((a) => txt(a) === 'berth');
    if (!home) problems.push('no link "berth" in <header>');
    else if (new URL(home.href).pathname !== '/ui/') problems.push(`header link "berth" goes to ${home.getAttribute('href')}, want /ui/`);
    if (document.querySelectorAll('nav[aria-label="Account"]').length !== 1) problems.push('no single <nav aria-label="Account">');
    if (document.querySelectorAll('nav[aria-label="Breadcrumb"]').length !== 1) problems.push('no single <nav aria-label="Breadcrumb">');
    if (document.querySelectorAll('main#main').length !== 1) problems.push('no single <main id="main">');
    const h1s = document.querySelectorAll('h1');
    if (h1s.length !== 1 || !h1s[0].closest('main')) problems.push(`${h1s.length} <h1> elements (want one, in <main>)`);
    if (!document.documentElement.getAttribute('lang')) problems.push('<html> without lang');
    if (!txt(document.querySelector('title'))) problems.push('empty <title>');
    // every visible form control has an accessible name
    const visible = (e) => !!(e.offsetWidth || e.offsetHeight || e.getClientRects().length) && getComputedStyle(e).visibility !== 'hidden';
    const name = (e) => {
      const al = e.getAttribute('aria-label');
      if (al && al.trim()) return al.trim();
      const lb = e.getAttribute('aria-labelledby');
      if (lb) {
        const t = lb.split(/\s+/).map((id) => txt(document.getElementById(id))).join(' ').trim();
        if (t) return t;
      }
      if (e.labels) { const t = [...e.labels].map(txt).join(' ').trim(); if (t) return t; }
      if (e.tagName === 'INPUT' && ['submit', 'button', 'reset'].includes(e.type) && e.value.trim()) return e.value.trim();
      return '';
    };
    for (const e of document.querySelectorAll('input:not([type="hidden"]), select, textarea')) {
      if (!visible(e)) continue;
      if (!name(e)) problems.push(`unlabelled <${e.tagName.toLowerCase()} name="${e.getAttribute('name') ?? ''}" type="${e.getAttribute('type') ?? ''}">`);
    }
    for (const b of document.querySelectorAll('button')) {
      if (visible(b) && !(b.getAttribute('aria-label') || txt(b))) problems.push(`button without a name: ${b.outerHTML.slice(0, 100)}`);
    }
    return problems;
  });
}
// horizontal overflow of the document, with the innermost elements sticking out that are not
// inside a scrolling (overflow-x != visible) wrapper
async function overflow(page) {
  return page.evaluate(() => {
    const W = window.innerWidth;
    const out = (e) => e.getBoundingClientRect().right > W + 1;
    // no ancestor in its containing-block chain clips it (an absolutely positioned element, such
    // as a visually hidden label, escapes overflow:auto wrappers without a positioned ancestor)
    const unclipped = (e) => {
      let abs = ['absolute', 'fixed'].includes(getComputedStyle(e).position);
      for (let a = e.parentElement; a && a !== document.body; a = a.parentElement) {
        const cs = getComputedStyle(a);
        if (abs && cs.position === 'static') continue;
        abs = ['absolute', 'fixed'].includes(cs.position);
        if (cs.overflowX !== 'visible') return false;
      }
      return true;
    };
    const culprits = [...document.body.querySelectorAll('*')]
      .filter((e) => out(e) && unclipped(e) && !(getComputedStyle(e).overflowX === 'visible' && [...e.children].some(out)))
      .slice(0, 6)
      .map((e) => {
        const cls = typeof e.className === 'string' && e.className.trim() ? '.' + e.className.trim().split(/\s+/).join('.') : '';
        const r = e.getBoundingClientRect();
        return `<${e.tagName.toLowerCase()}${e.id ? '#' + e.id : ''}${cls}> (position ${getComputedStyle(e).position}, in <${e.parentElement.tagName.toLowerCase()}>) right ${Math.round(r.right)}px, width ${Math.round(r.width)}px`;
      });
    return { scrollWidth: document.documentElement.scrollWidth, innerWidth: W, culprits };
  });
}
async function readClipboard(page) { return page.evaluate(() => navigator.clipboard.readText()); }
// click a copy button, then wait until the clipboard changes from its cleared state
async function copyVia(page, button) {
  await page.evaluate(() => navigator.clipboard.writeText('(cleared by ui.test.mjs)'));
  await button.click();
  const t0 = Date.now();
  let v;
  do {
    v = await readClipboard(page);
    if (v !== '(cleared by ui.test.mjs)') return v;
    await page.waitForTimeout(100);
  } while (Date.now() - t0 < 3000);
  return v;
}

// ------------------------------------------------------------------ state found by following links
const found = { webPath: null, manyPath: null, scratchPath: null, apiPath: null, publicPath: null };
function need(key) {
  if (!found[key]) throw new Error(`${key} unknown: an earlier check that finds it by following links failed`);
  return found[key];
}
const confirmUrlOf = (repoPath, tags) => `${repoPath}/tags/delete?` + tags.map((t) => `tag=${encodeURIComponent(t)}`).join('&');

// ================================================================== the checks
async function main() {
  const t0 = Date.now();
  browser = await chromium.launch({
    executablePath: env('CHROMIUM', '/usr/bin/chromium'),
    args: ['--no-sandbox'],
    headless: process.env.UI_HEADED !== '1',
  });
  console.log(`chromium ${browser.version()} (launched in ${Date.now() - t0} ms); screenshots: ${SHOTS}`);

  // preflight: without a UI nothing below can pass; fail once, fast
  {
    const r = await fetch(`${BASE}/ui/`);
    if (r.status !== 200 || !/<h1[\s>]/i.test(await r.text())) {
      failed += 1;
      console.log(`FAIL: preflight: GET ${BASE}/ui/ answers HTTP ${r.status} without an <h1>; the web UI is missing, the other checks were not run`);
      return;
    }
  }

  const anon = await newContext();
  const alice = await newContext();
  await alice.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: BASE });

  // ---------------------------------------------------------------- 1. anonymous
  console.log('\n== 1. anonymous visitor');
  const ap = await newPage(anon);
  await check('anonymous: GET / redirects to /ui/', async () => {
    const r = await ap.request.get(`${BASE}/`, { maxRedirects: 0 });
    ok([301, 302, 303, 307, 308].includes(r.status()), `GET / answers a redirect, got HTTP ${r.status()}`);
    eq(new URL(r.headers().location ?? '', BASE).pathname, '/ui/', 'Location of GET /');
    await open(ap, '/');
    eq(pathOf(ap), '/ui/', 'browser lands on');
    eq(await h1(ap), 'Projects', 'h1 of /ui/');
  });
  await check('anonymous: projects list has demo/public and not demo/private; Sign in link', async () => {
    await open(ap, '/ui/');
    const t = await readTable(ap, 'tbody tr');
    for (const h of ['Project', 'Visibility', 'Repositories']) ok(t.headers.includes(h), `projects table has a column ${h}: ${JSON.stringify(t.headers)}`);
    eq(await ap.getByRole('link', { name: 'demo/public', exact: true }).count(), 1, 'links named demo/public');
    eq(await ap.getByRole('link', { name: 'demo/private', exact: true }).count(), 0, 'links named demo/private (private project, anonymous)');
    ok(!(await mainText(ap)).includes('demo/private'), 'the page does not mention demo/private');
    const acct = await accountText(ap);
    ok(!acct.includes('Signed in as'), `Account nav of an anonymous visitor: ${JSON.stringify(acct)}`);
    eq(await ap.locator('nav[aria-label="Account"]').getByRole('link', { name: 'Sign in', exact: true }).count(), 1, 'Sign in link in the Account nav');
    eq(await ap.getByRole('search').getByLabel('Search projects', { exact: true }).count(), 1, 'a search landmark with "Search projects"');
    found.publicPath = new URL(await linkHref(ap, 'demo/public')).pathname;
    await shot(ap, 'projects-anonymous');
  });
  await check('anonymous: project search q=public finds demo/public only', async () => {
    await open(ap, '/ui/');
    await ap.getByLabel('Search projects', { exact: true }).fill('public');
    await navigate(ap, () => ap.getByRole('search').getByRole('button', { name: 'Search', exact: true }).click());
    eq(queryOf(ap).get('q'), 'public', 'q in the URL');
    eq(await ap.getByRole('link', { name: 'demo/public', exact: true }).count(), 1, 'links named demo/public');
  });
  await check('anonymous: project page demo/public lists web, many, scratch without Delete links', async () => {
    await open(ap, need('publicPath'));
    eq(await h1(ap), 'demo/public', 'h1 of the project page');
    found.webPath = new URL(await linkHref(ap, WEB)).pathname;
    found.manyPath = new URL(await linkHref(ap, MANY)).pathname;
    found.scratchPath = new URL(await linkHref(ap, SCRATCH)).pathname;
    ok(/\/repositories\/\d+$/.test(found.webPath), `repository link is .../repositories/<numeric id>: ${found.webPath}`);
    eq(await ap.getByRole('link', { name: /^Delete/ }).count(), 0, 'Delete links for an anonymous visitor');
  });
  await check('anonymous: tags page of demo/public/web has rows but no checkboxes / Delete selected / Delete repository', async () => {
    await open(ap, need('webPath'));
    eq(await h1(ap), WEB, 'h1 of the tags page');
    const r = await rows(ap);
    ok(r.length > 0 && r.length <= 20, `rows on page 1 (${WEB_TAGS.length} tags, at most 20 per page by default): ${r.length}`);
    eq(await ap.getByRole('checkbox').count(), 0, 'checkboxes for an anonymous visitor');
    eq(await ap.getByRole('button', { name: 'Delete selected' }).count(), 0, '"Delete selected" buttons for an anonymous visitor');
    eq(await ap.getByRole('link', { name: 'Delete repository' }).count(), 0, '"Delete repository" links for an anonymous visitor');
    eq(await ap.locator('form[method="post" i]').filter({ hasNot: ap.getByRole('button', { name: 'Sign out' }) }).count(), 0, 'POST forms for an anonymous visitor');
  });
  await check('anonymous: /ui/projects/demo%2Fprivate is 404 "Not found"', async () => {
    await open(ap, '/ui/projects/demo%2Fprivate', 404);
    eq(await h1(ap), 'Not found', 'h1 of the 404 page');
    ok(!(await mainText(ap)).includes(API), 'the 404 page does not name demo/private/api');
  });

  // ---------------------------------------------------------------- 2. sign-in
  console.log('\n== 2. sign-in');
  const lp = await newPage(alice);
  await check('login page: fields, csrf hidden input, berth_csrf cookie (HttpOnly, SameSite=Strict, Path=/ui)', async () => {
    await open(lp, '/ui/');
    await navigate(lp, () => lp.locator('nav[aria-label="Account"]').getByRole('link', { name: 'Sign in', exact: true }).click());
    eq(pathOf(lp), '/ui/login', 'the Sign in link goes to');
    eq(await h1(lp), 'Sign in', 'h1 of the login page');
    eq(await lp.getByLabel('User name', { exact: true }).getAttribute('name'), 'user', 'name of "User name"');
    const tok = lp.getByLabel('Personal access token', { exact: true });
    eq(await tok.getAttribute('name'), 'token', 'name of "Personal access token"');
    eq(await tok.getAttribute('type'), 'password', 'type of "Personal access token"');
    const csrf = lp.locator('form').filter({ has: lp.getByRole('button', { name: 'Sign in', exact: true }) }).locator('input[name="csrf"]');
    eq(await csrf.count(), 1, 'hidden csrf input in the sign-in form');
    ok((await csrf.inputValue()).length >= 16, 'csrf value is a token');
    const c = (await alice.cookies(BASE + '/ui/')).find((x) => x.name === 'berth_csrf');
    ok(c, `berth_csrf cookie set by the login page; cookies: ${JSON.stringify((await alice.cookies()).map((x) => x.name))}`);
    eq({ httpOnly: c.httpOnly, sameSite: c.sameSite, path: c.path }, { httpOnly: true, sameSite: 'Strict', path: '/ui' }, 'berth_csrf flags');
    await shot(lp, 'login');
  });
  await check('sign-in with a wrong token: 401 and an alert "Invalid user name or token"', async () => {
    await open(lp, '/ui/login');
    await lp.getByLabel('User name', { exact: true }).fill(ALICE.user);
    await lp.getByLabel('Personal access token', { exact: true }).fill('wrong-' + ALICE.token);
    const resp = await navigate(lp, () => lp.getByRole('button', { name: 'Sign in', exact: true }).click());
    eq(resp?.status(), 401, 'status of POST /ui/login with a wrong token');
    ok((await noticeText(lp, 'alert')).includes('Invalid user name or token'), `role=alert text: ${JSON.stringify(await noticeText(lp, 'alert'))}`);
    eq((await alice.cookies(BASE + '/ui/')).filter((x) => x.name === 'berth_session').length, 0, 'berth_session cookies after a failed sign-in');
    ok(!(await accountText(lp)).includes('Signed in as'), 'not signed in after a wrong token');
    await shot(lp, 'login-wrong-token');
  });
  let alicePage = null;
  await check('sign-in as alice with next=<tags page>: lands there, "Signed in as alice"', async () => {
    const next = need('webPath');
    alicePage = await signIn(alice, ALICE, next);
    eqPath(alicePage.url(), next, 'page after sign-in (the next parameter)');
    const acct = await accountText(alicePage);
    ok(acct.includes(`Signed in as ${ALICE.user}`), `Account nav: ${JSON.stringify(acct)}`);
    eq(await alicePage.locator('nav[aria-label="Account"]').getByRole('button', { name: 'Sign out', exact: true }).count(), 1, 'Sign out button');
  });
  await check('berth_session cookie: HttpOnly, SameSite Lax/Strict, Path=/ui, expires in the future within 24 h', async () => {
    const c = (await alice.cookies(BASE + '/ui/')).find((x) => x.name === 'berth_session');
    ok(c, `berth_session cookie; cookies: ${JSON.stringify((await alice.cookies()).map((x) => x.name))}`);
    eq(c.httpOnly, true, 'berth_session httpOnly');
    ok(['Lax', 'Strict'].includes(c.sameSite), `berth_session sameSite Lax or Strict, got ${c.sameSite}`);
    eq(c.path, '/ui', 'berth_session path');
    const now = Date.now() / 1000;
    ok(c.expires > now + 60 && c.expires <= now + 24 * 3600 + 60,
      `berth_session expires ${c.expires} (${c.expires > 0 ? new Date(c.expires * 1000).toISOString() : 'session cookie'}): want in the future, within 24 h of now ${new Date(now * 1000).toISOString()}`);
    ok(c.value.length >= 16 && !c.value.includes(ALICE.token), 'session cookie value is an opaque token (not the PAT)');
  });
  await check('alice: projects list shows demo/public and demo/private; demo/private lists demo/private/api', async () => {
    const p = alicePage ?? await newPage(alice);
    await open(p, '/ui/');
    eq(await p.getByRole('link', { name: 'demo/public', exact: true }).count(), 1, 'links named demo/public');
    eq(await p.getByRole('link', { name: 'demo/private', exact: true }).count(), 1, 'links named demo/private');
    await shot(p, 'projects-alice');
    await navigate(p, () => p.getByRole('link', { name: 'demo/private', exact: true }).click());
    eq(await h1(p), 'demo/private', 'h1 of the private project page');
    found.apiPath = new URL(await linkHref(p, API)).pathname;
  });

  // ---------------------------------------------------------------- project page (alice)
  console.log('\n== project page');
  await check('alice: project page demo/public: columns, "Delete repository demo/public/web" link, filter and sort', async () => {
    const p = alicePage;
    await open(p, need('publicPath'));
    const t = await readTable(p, 'tbody tr');
    for (const h of ['Repository', 'Tags', 'Size', 'Last updated']) ok(t.headers.includes(h), `project table has a column ${h}: ${JSON.stringify(t.headers)}`);
    eq(await p.getByRole('link', { name: `Delete repository ${WEB}`, exact: true }).count(), 1, `link "Delete repository ${WEB}"`);
    await shot(p, 'project-demo-public');
    // tags desc: many (10000 tags) first
    await p.getByLabel('Sort by', { exact: true }).selectOption('tags');
    await p.getByLabel('Order', { exact: true }).selectOption('desc');
    await navigate(p, () => p.getByRole('button', { name: 'Apply', exact: true }).click());
    eq(queryOf(p).get('sort'), 'tags', 'sort in the URL');
    const repoLinks = await p.locator('main tbody tr').evaluateAll((trs) => trs.map((tr) => tr.querySelector('a')?.textContent.trim()));
    const mostTags = MANY_COUNT > WEB_TAGS.length ? MANY : WEB; // scratch has 1
    eq(repoLinks[0], mostTags, `first repository by tags desc (${JSON.stringify(repoLinks)})`);
    await p.getByLabel('Search repositories', { exact: true }).fill('web');
    await navigate(p, () => p.getByRole('button', { name: 'Apply', exact: true }).click());
    const filtered = await p.locator('main tbody tr').evaluateAll((trs) => trs.map((tr) => tr.querySelector('a')?.textContent.trim()));
    eq(filtered, [WEB], 'repositories matching q=web');
  });

  // ---------------------------------------------------------------- 3. search
  console.log('\n== 3. tag search');
  const rc1 = WEB_TAGS.filter((t) => t.includes('rc-1')).sort(byName);
  let searchUrl = null;
  await check('search tags "rc-1": URL has q=rc-1, rows are exactly the names containing rc-1, count says so', async () => {
    const p = alicePage;
    await open(p, need('webPath'));
    await applyTagFilter(p, { q: 'rc-1' });
    eq(queryOf(p).get('q'), 'rc-1', 'q in the URL');
    eq((await rows(p)).sort(byName), rc1, 'rows for q=rc-1');
    eq((await tagCount(p)).n, rc1.length, 'number in #tag-count');
    eq(await p.getByLabel('Search tags', { exact: true }).inputValue(), 'rc-1', '"Search tags" keeps the query');
    searchUrl = p.url();
    await shot(p, 'tags-filtered-rc-1');
  });
  await check('search: the URL opened in a new page shows the same rows', async () => {
    ok(searchUrl, 'the search URL from the previous check');
    const p = await newPage(alice);
    await open(p, searchUrl);
    eq((await rows(p)).sort(byName), rc1, `rows of ${searchUrl} in a new page`);
    await p.close();
  });

  // ---------------------------------------------------------------- 4. sort
  console.log('\n== 4. sort');
  await check('sort by name desc (form): rows in descending name order, the form shows the state', async () => {
    const p = alicePage;
    await open(p, need('webPath'));
    await applyTagFilter(p, { q: '', sort: 'name', order: 'desc', perPage: 50 });
    eq([queryOf(p).get('sort'), queryOf(p).get('order')], ['name', 'desc'], 'sort, order in the URL');
    eq(await rows(p), [...WEB_TAGS].sort(byName).reverse(), 'rows by name desc (per_page=50)');
    eq(await p.getByLabel('Sort by', { exact: true }).inputValue(), 'name', '"Sort by" after reload');
    eq(await p.getByLabel('Order', { exact: true }).inputValue(), 'desc', '"Order" after reload');
    eq(await p.getByLabel('Per page', { exact: true }).inputValue(), '50', '"Per page" after reload');
  });
  await check('sort by size desc: v3 (256 KiB) then v2 (128 KiB) first; Size titles non-increasing', async () => {
    const p = alicePage;
    await open(p, withQuery(need('webPath'), { sort: 'size', order: 'desc', per_page: 50 }));
    const r = await rows(p);
    eq(r.slice(0, 2), ['v3', 'v2'], `first rows by size desc (all: ${r.join(' ')})`);
    const t = await readTable(p);
    ok(t.headers.includes('Size'), `a Size column: ${JSON.stringify(t.headers)}`);
    const bytes = t.rows.map((x) => {
      const m = (x.cols.Size?.title ?? '').replace(/[,\u00a0\u202f ]/g, '').match(/^(\d+)(bytes|B)?$/i);
      return m ? Number(m[1]) : null;
    });
    if (bytes.every((b) => b !== null)) {
      for (let i = 1; i < bytes.length; i++) ok(bytes[i] <= bytes[i - 1], `Size title bytes non-increasing: row ${i} ${r[i]} ${bytes[i]} > row ${i - 1} ${r[i - 1]} ${bytes[i - 1]}`);
      eq(bytes[0], SEED.images.v3.total_size, 'Size title of v3 = manifest + config + layer bytes');
    } else {
      console.log(`    note: Size cells carry no byte count in title (${JSON.stringify(t.rows[0]?.cols.Size)}); order checked by tag only`);
    }
    await open(p, withQuery(need('webPath'), { sort: 'size', order: 'asc', per_page: 50 }));
    const asc = await rows(p);
    eq(asc.slice(-2), ['v2', 'v3'], `last rows by size asc (all: ${asc.join(' ')})`);
  });
  await check('sort by published: desc starts with latest (pushed last), asc with v1 (pushed first); <time datetime> monotonic', async () => {
    const p = alicePage;
    for (const [order, first] of [['desc', 'latest'], ['asc', 'v1']]) {
      await open(p, withQuery(need('webPath'), { sort: 'published', order, per_page: 50 }));
      const t = await readTable(p);
      eq(t.rows[0]?.key, first, `first row by published ${order} (all: ${t.rows.map((x) => x.key).join(' ')})`);
      const times = t.rows.map((x) => Date.parse(x.cols.Published?.datetime ?? ''));
      ok(times.every((x) => Number.isFinite(x)), `every Published cell has <time datetime>: ${JSON.stringify(t.rows.slice(0, 3).map((x) => x.cols.Published))}`);
      for (let i = 1; i < times.length; i++) {
        ok(order === 'desc' ? times[i] <= times[i - 1] : times[i] >= times[i - 1],
          `published ${order}: row ${i} ${t.rows[i].key} ${t.rows[i].cols.Published.datetime} after row ${i - 1} ${t.rows[i - 1].key} ${t.rows[i - 1].cols.Published.datetime}`);
      }
    }
  });
  await check('sort by created asc: the v1 manifest (v1, rc-*) first', async () => {
    const p = alicePage;
    await open(p, withQuery(need('webPath'), { sort: 'created', order: 'asc', per_page: 50 }));
    const r = await rows(p);
    eq(r.length, WEB_TAGS.length, 'rows (per_page=50)');
    ok(r[0] === 'v1' || r[0].startsWith('rc-'), `first row by created asc is v1 or an rc tag (same manifest), got ${r[0]} (all: ${r.join(' ')})`);
    eq(await p.getByLabel('Sort by', { exact: true }).inputValue(), 'created', '"Sort by" shows created');
  });

  // ---------------------------------------------------------------- 5. kind filter
  console.log('\n== 5. kind filter');
  await check('kind=index (form): only multi', async () => {
    const p = alicePage;
    await open(p, need('webPath'));
    await applyTagFilter(p, { kind: 'index' });
    eq(queryOf(p).get('kind'), 'index', 'kind in the URL');
    eq(await rows(p), ['multi'], 'rows for kind=index');
    await shot(p, 'tags-kind-index');
  });
  await check('kind=artifact: only v1-sig', async () => {
    const p = alicePage;
    await open(p, withQuery(need('webPath'), { kind: 'artifact' }));
    eq(await rows(p), [ARTIFACT.tag], 'rows for kind=artifact');
  });
  await check('kind=image: every image tag, not multi, not v1-sig', async () => {
    const p = alicePage;
    await open(p, withQuery(need('webPath'), { kind: 'image', per_page: 50 }));
    eq((await rows(p)).sort(byName), WEB_TAGS.filter((t) => t !== 'multi' && t !== ARTIFACT.tag).sort(byName), 'rows for kind=image');
  });

  // ---------------------------------------------------------------- 6. pagination
  console.log('\n== 6. pagination');
  await check(`pagination: ${WEB_TAGS.length} tags at per_page=20: "Page 1 of 2", Next keeps sort/order, page 2 has the rest`, async () => {
    const p = alicePage;
    await open(p, withQuery(need('webPath'), { sort: 'published', order: 'desc', per_page: 20 }));
    eq((await tagCount(p)).n, WEB_TAGS.length, 'number in #tag-count');
    ok((await paginationText(p)).includes('Page 1 of 2'), `pagination text: ${JSON.stringify(await paginationText(p))}`);
    const page1 = await rows(p);
    eq(page1.length, 20, 'rows on page 1');
    const pag = p.locator('nav[aria-label="Pagination"]');
    const next = new URL(await linkHref(p, 'Next', pag));
    eq(['sort', 'order', 'page'].map((k) => next.searchParams.get(k)), ['published', 'desc', '2'], `query of the Next link ${next.search}`);
    ok([null, '20'].includes(next.searchParams.get('per_page')), `per_page of the Next link is 20 or the default: ${next.search}`);
    await navigate(p, () => pag.getByRole('link', { name: 'Next', exact: true }).click());
    eq(queryOf(p).get('page'), '2', 'page in the URL after Next');
    ok((await paginationText(p)).includes('Page 2 of 2'), `pagination text on page 2: ${JSON.stringify(await paginationText(p))}`);
    const page2 = await rows(p);
    eq(page2.length, WEB_TAGS.length - 20, 'rows on page 2');
    eq(page1.filter((t) => page2.includes(t)), [], 'tags on both pages');
    eq([...page1, ...page2].sort(byName), [...WEB_TAGS].sort(byName), 'pages 1 + 2 = every tag');
    eq(page1[0], 'latest', 'page 1 starts with the newest tag (sort kept)');
    eq(await pag.getByRole('link', { name: 'Previous', exact: true }).count(), 1, 'Previous link on page 2');
    eq(await pag.getByRole('link', { name: 'Next', exact: true }).count(), 0, 'Next link on the last page');
    await shot(p, 'tags-page-2');
  });

  // ---------------------------------------------------------------- 7. tag details
  console.log('\n== 7. tag details');
  await check('tag v1: h1, Digest = registry Docker-Content-Digest, media type, config, Layers, pull by digest', async () => {
    const p = alicePage;
    await open(p, withQuery(need('webPath'), { q: 'v1' }));
    await navigate(p, () => p.locator('tr[data-tag="v1"]').getByRole('link', { name: 'v1', exact: true }).click());
    eq(await h1(p), `${WEB}:v1`, 'h1 of the tag page');
    const reg = await headManifest(ALICE, WEB, 'v1');
    eq(reg.status, 200, 'registry HEAD /v2/demo/public/web/manifests/v1');
    const dl = await definitionList(p);
    for (const k of ['Digest', 'Media type', 'Config digest', 'Size', 'Published', 'Created']) ok(k in dl, `<dt>${k}</dt> present: ${JSON.stringify(Object.keys(dl))}`);
    eq(dl.Digest.text, reg.digest, 'Digest <dd> vs the registry');
    eq(dl['Media type'].text, 'application/vnd.oci.image.manifest.v1+json', 'Media type <dd>');
    ok(dl['Config digest'].text.includes('sha256:') || (dl['Config digest'].title ?? '').startsWith('sha256:'), `Config digest <dd>: ${JSON.stringify(dl['Config digest'])}`);
    const layers = await section(p, 'Layers');
    ok(layers, 'an <h2>Layers</h2> section');
    ok(layers.rows.length >= 1, `Layers table rows: ${JSON.stringify(layers)}`);
    ok(layers.text.includes('application/vnd.oci.image.layer.v1.tar+gzip'), `Layers lists the layer media type: ${layers.text.slice(0, 300)}`);
    const byDigest = await p.getByLabel('Pull by digest', { exact: true }).inputValue();
    ok(byDigest.endsWith(`/${WEB}@${reg.digest}`), `"Pull by digest": ${byDigest}`);
    const ref = await p.getByLabel('Image reference', { exact: true }).inputValue();
    ok(ref.endsWith(`/${WEB}:v1`), `"Image reference": ${ref}`);
    eq(await p.getByLabel('Image reference', { exact: true }).evaluate((e) => e.readOnly), true, '"Image reference" is readonly');
    eq(await p.getByLabel('Pull command', { exact: true }).evaluate((e) => e.readOnly), true, '"Pull command" is readonly');
    eq(await p.getByRole('link', { name: 'Delete tag', exact: true }).count(), 1, '"Delete tag" link for alice');
    await shot(p, 'tag-detail-image-v1');
  });
  await check('tag v1: Referrers lists the signature artifact (type and digest)', async () => {
    const p = alicePage;
    await open(p, `${need('webPath')}/tags/v1`);
    const s = await section(p, 'Referrers');
    ok(s, 'an <h2>Referrers</h2> section');
    ok(s.text.includes(ARTIFACT.artifactType), `Referrers mentions ${ARTIFACT.artifactType}: ${s.text.slice(0, 400)}`);
    const digests = s.rows.map((r) => `${r.Digest?.text ?? ''} ${r.Digest?.title ?? ''}`);
    ok(digests.some((d) => d.includes(ARTIFACT.digest) || d.includes(ARTIFACT.digest.slice(7, 19))), `Referrers row with ${ARTIFACT.digest}: ${JSON.stringify(s.rows)}`);
  });
  await check('tag latest: "No referrers"', async () => {
    const p = alicePage;
    await open(p, `${need('webPath')}/tags/latest`);
    eq(await h1(p), `${WEB}:latest`, 'h1');
    const s = await section(p, 'Referrers');
    ok(s && s.text.includes('No referrers'), `Referrers section of latest: ${JSON.stringify(s)}`);
  });
  await check('tag multi: index media type, Platforms linux/amd64 and linux/arm64 with their digests', async () => {
    const p = alicePage;
    await open(p, withQuery(need('webPath'), { kind: 'index' }));
    await navigate(p, () => p.locator('tr[data-tag="multi"]').getByRole('link', { name: 'multi', exact: true }).click());
    eq(await h1(p), `${WEB}:multi`, 'h1');
    const dl = await definitionList(p);
    eq(dl['Media type']?.text, 'application/vnd.oci.image.index.v1+json', 'Media type <dd>');
    eq(dl.Digest?.text, SEED.images.multi.digest, 'Digest <dd> = the pushed index');
    const s = await section(p, 'Platforms');
    ok(s, 'an <h2>Platforms</h2> section');
    const plats = s.rows.map((r) => r.Platform?.text).sort();
    eq(plats, ['linux/amd64', 'linux/arm64'], `Platform column (${JSON.stringify(s.headers)})`);
    for (const arch of ['amd64', 'arm64']) {
      const d = SEED.images[`multi-${arch}`].digest;
      ok(s.text.includes(d) || s.rows.some((r) => (r.Digest?.title ?? '') === d) || s.text.includes(d.slice(7, 19)), `Platforms shows linux/${arch}'s digest ${d}`);
    }
    await shot(p, 'tag-detail-index-multi');
  });

  // ---------------------------------------------------------------- 8. copy buttons
  console.log('\n== 8. copy buttons');
  await check('Copy pull command for v1 puts "docker pull HOST/demo/public/web:v1" on the clipboard', async () => {
    const p = alicePage;
    await open(p, withQuery(need('webPath'), { q: 'v1' }));
    const pull = await p.getByLabel('Pull command', { exact: true }).inputValue();
    const m = pull.match(/^docker pull (\S+?)\/demo\/public\/web(:\S+)?$/);
    ok(m, `"Pull command" field: ${JSON.stringify(pull)}`);
    const want = `docker pull ${m[1]}/${WEB}:v1`;
    const got = await copyVia(p, p.getByRole('button', { name: 'Copy pull command for v1', exact: true }));
    eq(got, want, 'clipboard after "Copy pull command for v1"');
    // the Copy button following the "Pull command" field copies that field
    const afterPull = p.getByLabel('Pull command', { exact: true }).locator('xpath=following::button[1]');
    eq(await afterPull.textContent().then((t) => t.trim()), 'Copy', 'the button after "Pull command"');
    ok(await afterPull.isVisible(), 'that Copy button is visible (JavaScript on)');
    eq(await copyVia(p, afterPull), pull, 'clipboard after the Copy button of "Pull command"');
  });

  // ---------------------------------------------------------------- 9. deletes
  console.log('\n== 9. delete with confirmation');
  const tickAndDeleteSelected = async (p, tags) => {
    await open(p, withQuery(need('webPath'), { q: 'v', per_page: 50 }));
    for (const t of tags) await p.getByLabel(`Select ${t}`, { exact: true }).check();
    await navigate(p, () => p.getByRole('button', { name: 'Delete selected', exact: true }).click());
    ok(pathOf(p).endsWith('/tags/delete'), `"Delete selected" goes to .../tags/delete, got ${p.url()}`);
    eq(queryOf(p).getAll('tag').sort(byName), [...tags].sort(byName), 'tag parameters of the confirmation URL');
  };
  await check('delete v2+v3: confirmation "Delete 2 tags?", Cancel returns and deletes nothing', async () => {
    const p = alicePage;
    await tickAndDeleteSelected(p, ['v2', 'v3']);
    eq(await h1(p), 'Delete 2 tags?', 'h1 of the confirmation page');
    const body = await mainText(p);
    ok(body.includes('v2') && body.includes('v3'), 'the confirmation page lists v2 and v3');
    const form = p.locator('form[method="post" i]').filter({ has: p.getByRole('button', { name: 'Delete', exact: true }) });
    eq(await form.count(), 1, 'one POST form with a Delete button');
    eq(new URL(await form.getAttribute('action'), p.url()).pathname, `${need('webPath')}/tags/delete`, 'action of the confirmation form');
    eq((await form.locator('input[type="hidden"][name="tag"]').evaluateAll((es) => es.map((e) => e.value))).sort(byName), ['v2', 'v3'], 'hidden tag inputs');
    eq(await form.locator('input[type="hidden"][name="csrf"]').count(), 1, 'hidden csrf input');
    await shot(p, 'confirm-delete-2-tags');
    await navigate(p, () => p.getByRole('link', { name: 'Cancel', exact: true }).click());
    eqPath(p.url(), need('webPath'), 'Cancel goes back to the tag list');
    const reg = await registryTags(ALICE, WEB);
    ok(reg.includes('v2') && reg.includes('v3'), `registry still has v2 and v3 after Cancel: ${reg.join(' ')}`);
  });
  await check('delete v2+v3: Delete → tag list with "Deleted 2 tags.", rows gone', async () => {
    const p = alicePage;
    await tickAndDeleteSelected(p, ['v2', 'v3']);
    const resp = await navigate(p, () => p.getByRole('button', { name: 'Delete', exact: true }).click());
    eq(resp?.status(), 200, 'status after the POST (303 then the tag list)');
    eq(resp?.request().redirectedFrom()?.method(), 'POST', 'the tag list is reached through a redirect of the POST');
    eqPath(p.url(), need('webPath'), 'page after deleting');
    ok((await noticeText(p, 'status')).includes('Deleted 2 tags.'), `role=status text: ${JSON.stringify(await noticeText(p, 'status'))}`);
    await shot(p, 'after-delete-notice');
    await open(p, withQuery(need('webPath'), { q: 'v', per_page: 50 }));
    eq((await rows(p)).sort(byName), ['v1', 'v1-sig'], 'rows for q=v after deleting v2, v3');
  });
  await check('registry API after the UI delete: v2, v3 absent, v1 present', async () => {
    const reg = await registryTags(ALICE, WEB);
    ok(reg && !reg.includes('v2') && !reg.includes('v3') && reg.includes('v1'), `GET /v2/${WEB}/tags/list: ${JSON.stringify(reg)}`);
    eq((await headManifest(ALICE, WEB, 'v2')).status, 404, 'HEAD manifests/v2');
  });
  await check('delete rc-25 from its tag page: "Delete tag" → "Delete tag rc-25?" → "Deleted 1 tag."', async () => {
    const p = alicePage;
    await open(p, withQuery(need('webPath'), { q: 'rc-25' }));
    await navigate(p, () => p.locator('tr[data-tag="rc-25"]').getByRole('link', { name: 'rc-25', exact: true }).click());
    eq(await h1(p), `${WEB}:rc-25`, 'h1 of the tag page');
    await navigate(p, () => p.getByRole('link', { name: 'Delete tag', exact: true }).click());
    eq(await h1(p), 'Delete tag rc-25?', 'h1 of the confirmation page');
    await navigate(p, () => p.getByRole('button', { name: 'Delete', exact: true }).click());
    eqPath(p.url(), need('webPath'), 'page after deleting');
    ok((await noticeText(p, 'status')).includes('Deleted 1 tag.'), `role=status text: ${JSON.stringify(await noticeText(p, 'status'))}`);
    const reg = await registryTags(ALICE, WEB);
    ok(!reg.includes('rc-25') && reg.includes('rc-24'), `registry tags after deleting rc-25: ${reg.join(' ')}`);
  });
  await check('delete repository demo/public/scratch: confirmation, notice on the project page, gone from the registry', async () => {
    const p = alicePage;
    await open(p, need('publicPath'));
    await navigate(p, () => p.getByRole('link', { name: `Delete repository ${SCRATCH}`, exact: true }).click());
    eqPath(p.url(), `${need('scratchPath')}/delete`, 'the confirmation URL');
    await shot(p, 'confirm-delete-repository');
    await navigate(p, () => p.getByRole('button', { name: 'Delete repository', exact: true }).click());
    eqPath(p.url(), need('publicPath'), 'page after deleting the repository');
    ok((await noticeText(p, 'status')).length > 0, 'a role=status notice after deleting the repository');
    eq(await p.getByRole('link', { name: SCRATCH, exact: true }).count(), 0, `links to ${SCRATCH} after deleting it`);
    const reg = await registryTags(ALICE, SCRATCH);
    ok(reg === null || reg.length === 0, `GET /v2/${SCRATCH}/tags/list after deleting: ${JSON.stringify(reg)}`);
  });

  // ---------------------------------------------------------------- 10. CSRF
  console.log('\n== 10. CSRF');
  const deleteUrl = () => `${BASE}${need('webPath')}/tags/delete`;
  await check('browser form POST without its csrf field: 403 page mentioning CSRF, nothing deleted', async () => {
    const p = alicePage;
    await open(p, confirmUrlOf(need('webPath'), ['v1']));
    eq(await h1(p), 'Delete tag v1?', 'h1 of the confirmation page');
    await p.locator('input[name="csrf"]').evaluateAll((es) => es.forEach((e) => { if (e.closest('form')?.querySelector('input[name="tag"]')) e.remove(); }));
    const resp = await navigate(p, () => p.getByRole('button', { name: 'Delete', exact: true }).click());
    eq(resp?.status(), 403, 'status of the POST without csrf');
    ok((await mainText(p)).includes('CSRF'), `the 403 page mentions CSRF: ${(await mainText(p)).slice(0, 300)}`);
    await shot(p, 'csrf-403');
  });
  await check('POST tags/delete {tag: v1} without csrf (session cookie sent): 403, body mentions CSRF', async () => {
    const r = await alicePage.request.post(deleteUrl(), { form: { tag: 'v1' }, maxRedirects: 0, headers: { Origin: BASE } });
    eq(r.status(), 403, `POST ${deleteUrl()} without csrf`);
    ok((await r.text()).includes('CSRF'), 'the body mentions CSRF');
  });
  await check('POST tags/delete with csrf=forged: 403', async () => {
    const r = await alicePage.request.post(deleteUrl(), { form: { tag: 'v1', csrf: 'forged' }, maxRedirects: 0, headers: { Origin: BASE } });
    eq(r.status(), 403, `POST ${deleteUrl()} with csrf=forged`);
  });
  await check('POST tags/delete with a valid csrf but Origin: http://evil.example: 403', async () => {
    await open(alicePage, need('webPath'));
    const csrf = await signOutCsrf(alicePage);
    const r = await alicePage.request.post(deleteUrl(), { form: { tag: 'v1', csrf }, maxRedirects: 0, headers: { Origin: 'http://evil.example' } });
    eq(r.status(), 403, `POST ${deleteUrl()} with Origin: http://evil.example`);
  });
  await check('v1 survives the refused POSTs (registry API)', async () => {
    const h = await headManifest(ALICE, WEB, 'v1');
    eq(h.status, 200, 'HEAD manifests/v1');
    eq(h.digest, SEED.images.v1.digest, 'v1 digest unchanged');
  });
  await check('control: the same POST with a valid csrf and the page Origin deletes rc-24 (303)', async () => {
    await open(alicePage, need('webPath'));
    const csrf = await signOutCsrf(alicePage);
    const r = await alicePage.request.post(deleteUrl(), { form: { tag: 'rc-24', csrf }, maxRedirects: 0, headers: { Origin: BASE } });
    eq(r.status(), 303, `POST ${deleteUrl()} {tag: rc-24, csrf: <valid>}`);
    eq((await headManifest(ALICE, WEB, 'rc-24')).status, 404, 'HEAD manifests/rc-24 afterwards');
  });

  // ---------------------------------------------------------------- 13. accessibility (alice, every page type)
  console.log('\n== 13. accessibility');
  const pageTypes = () => [
    ['projects', '/ui/'],
    ['project', need('publicPath')],
    ['tags', need('webPath')],
    ['tag detail (image)', `${need('webPath')}/tags/v1`],
    ['tag detail (index)', `${need('webPath')}/tags/multi`],
    ['delete confirmation', confirmUrlOf(need('webPath'), ['v1', 'latest'])],
    ['repository delete confirmation', `${need('webPath')}/delete`],
  ];
  await check('structure and labels: skip link, header, Account/Breadcrumb navs, main#main, one h1, every visible control labelled (alice\'s pages)', async () => {
    const problems = [];
    for (const [what, url] of pageTypes()) {
      await open(alicePage, url);
      for (const x of await structureProblems(alicePage)) problems.push(`${what} (${url}): ${x}`);
    }
    eq(problems, [], 'problems');
  });
  await check('structure and labels on the login and 404 pages (anonymous)', async () => {
    const problems = [];
    for (const [what, url, st] of [['login', '/ui/login', 200], ['not found', '/ui/projects/demo%2Fprivate', 404]]) {
      await open(ap, url, st);
      for (const x of await structureProblems(ap)) problems.push(`${what} (${url}): ${x}`);
    }
    eq(problems, [], 'problems');
  });
  await check('keyboard: the first Tab focuses "Skip to content"', async () => {
    const p = await newPage(alice);
    await open(p, need('webPath'));
    await p.keyboard.press('Tab');
    const f = await p.evaluate(() => ({ tag: document.activeElement?.tagName, text: document.activeElement?.textContent.trim(), href: document.activeElement?.getAttribute('href') }));
    eq(f, { tag: 'A', text: 'Skip to content', href: '#main' }, 'focused element after one Tab');
    await p.keyboard.press('Enter');
    eq(new URL(p.url()).hash, '#main', 'Enter on the skip link goes to #main');
    await p.close();
  });
  // axe-core's WCAG 2.0/2.1 A and AA rules (contrast, names, landmarks, ARIA...) on every page
  // type, as alice (who sees every control) and anonymously. The script is injected, so this
  // context bypasses the pages' Content-Security-Policy (which would rightly refuse it).
  await check('axe-core: no WCAG 2.1 A/AA violations on any page type (alice, anonymous login and 404)', async () => {
    const ctx = await newContext({ bypassCSP: true });
    const p = await newPage(ctx);
    const audit = async (what, url, status = 200) => {
      await open(p, url, status);
      await p.addScriptTag({ path: AXE_JS });
      const found = await p.evaluate(async () => {
        const r = await window.axe.run(document, {
          runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa'] },
          resultTypes: ['violations'],
        });
        return r.violations.map((v) => `${v.id} (${v.impact}): ${v.help}; ${v.nodes.length} node(s), e.g. ${v.nodes[0]?.target.join(' ')}`);
      });
      return found.map((x) => `${what} (${url}): ${x}`);
    };
    // Control: the same audit on a page with known faults must report them.
    await p.setContent('<!doctype html><html><head><title>x</title></head><body><main><img src="x.png"><input></main></body></html>');
    await p.addScriptTag({ path: AXE_JS });
    const control = await p.evaluate(async () => (await window.axe.run(document, {
      runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa'] }, resultTypes: ['violations'] })).violations.map((v) => v.id));
    ok(control.includes('image-alt') && control.includes('label'), `the audit finds faults in a faulty page (found: ${control.join(', ')})`);
    const problems = [];
    problems.push(...await audit('login', '/ui/login'));
    problems.push(...await audit('not found', '/ui/projects/demo%2Fprivate', 404));
    await signIn(ctx, ALICE, '/ui/');
    for (const [what, url] of pageTypes()) problems.push(...await audit(what, url));
    await ctx.close();
    eq(problems, [], 'axe-core violations');
  });
  await check('narrow screen 375x800: tags page without horizontal document overflow (alice, with checkboxes)', async () => {
    const p = await newPage(alice);
    await p.setViewportSize({ width: 375, height: 800 });
    await open(p, need('webPath'));
    await shot(p, 'tags-narrow-375px');
    ok(await p.getByRole('checkbox').count() > 0, 'checkboxes shown');
    const m = await overflow(p);
    await open(p, `${need('webPath')}/tags/v1`);
    await shot(p, 'tag-detail-narrow-375px');
    const d = await overflow(p);
    await p.close();
    const problems = [];
    for (const [what, x] of [['tags page', m], ['tag page v1', d]]) {
      if (x.scrollWidth > x.innerWidth + 1) {
        problems.push(`${what}: document.documentElement.scrollWidth ${x.scrollWidth} > window.innerWidth ${x.innerWidth} + 1; ` +
          `widest elements outside a scrolling wrapper: ${x.culprits.join('; ') || '(none found)'}`);
      }
    }
    eq(problems, [], 'horizontal overflow at 375 px');
  });

  await check('without JavaScript: sign-in, search, bulk delete through the confirmation page; copy buttons hidden, the pull command selectable', async () => {
    const ctx = await newContext({ javaScriptEnabled: false });
    const p = await signIn(ctx, ALICE, need('webPath'));
    await p.getByLabel('Search tags', { exact: true }).fill('rc-2');
    await navigate(p, () => p.getByRole('button', { name: 'Apply', exact: true }).click());
    eq(queryOf(p).get('q'), 'rc-2', 'q in the URL after Apply');
    ok(await p.getByRole('button', { name: 'Copy', exact: true }).count() === 0, 'no visible Copy buttons without JavaScript');
    ok((await p.getByLabel('Pull command', { exact: true }).inputValue()).startsWith('docker pull '), 'the pull command is in a readonly field');
    await p.getByRole('checkbox', { name: 'Select rc-22', exact: true }).check();
    await p.getByRole('checkbox', { name: 'Select rc-23', exact: true }).check();
    await navigate(p, () => p.getByRole('button', { name: 'Delete selected', exact: true }).click());
    eq(await h1(p), 'Delete 2 tags?', 'h1 of the confirmation page');
    await navigate(p, () => p.getByRole('button', { name: 'Delete', exact: true }).click());
    eq(await noticeText(p, 'status'), 'Deleted 2 tags.', 'notice after the delete');
    eq(queryOf(p).get('q'), 'rc-2', 'back on the filtered list');
    const reg = await registryTags(ALICE, WEB);
    ok(!reg.includes('rc-22') && !reg.includes('rc-23') && reg.includes('rc-21'), `registry tags: ${reg.join(' ')}`);
    await ctx.close();
  });

  // ---------------------------------------------------------------- 11. bob (Reporter)
  console.log('\n== 11. bob (Reporter in demo/private)');
  const bob = await newContext();
  let bobPage = null;
  await check('bob signs in and sees demo/private and demo/private/api', async () => {
    bobPage = await signIn(bob, BOB, '/ui/');
    eq(pathOf(bobPage), '/ui/', 'page after sign-in');
    ok((await accountText(bobPage)).includes(`Signed in as ${BOB.user}`), 'Signed in as bob');
    await navigate(bobPage, () => bobPage.getByRole('link', { name: 'demo/private', exact: true }).click());
    eq(await h1(bobPage), 'demo/private', 'h1');
    const api = new URL(await linkHref(bobPage, API)).pathname;
    if (found.apiPath) eq(api, found.apiPath, 'the demo/private/api link bob sees vs alice');
    found.apiPath = api;
    eq(await bobPage.getByRole('link', { name: /^Delete/ }).count(), 0, 'Delete links on the project page for a Reporter');
  });
  await check('bob: demo/private/api tags page and tag page without delete controls', async () => {
    await open(bobPage, need('apiPath'));
    eq(await h1(bobPage), API, 'h1');
    eq(await rows(bobPage), ['v1'], 'rows');
    eq(await bobPage.getByRole('checkbox').count(), 0, 'checkboxes for a Reporter');
    eq(await bobPage.getByRole('button', { name: 'Delete selected' }).count(), 0, '"Delete selected" for a Reporter');
    eq(await bobPage.getByRole('link', { name: 'Delete repository' }).count(), 0, '"Delete repository" for a Reporter');
    await shot(bobPage, 'tags-reporter-bob');
    await navigate(bobPage, () => bobPage.locator('tr[data-tag="v1"]').getByRole('link', { name: 'v1', exact: true }).click());
    eq(await h1(bobPage), `${API}:v1`, 'h1 of the tag page');
    eq(await bobPage.getByRole('link', { name: 'Delete tag' }).count(), 0, '"Delete tag" for a Reporter');
  });
  await check('bob: POST delete of demo/private/api:v1 with a valid csrf: 403, tag still there', async () => {
    const csrf = await signOutCsrf(bobPage);
    const url = `${BASE}${need('apiPath')}/tags/delete`;
    const r = await bobPage.request.post(url, { form: { tag: 'v1', csrf }, maxRedirects: 0, headers: { Origin: BASE } });
    eq(r.status(), 403, `POST ${url} as bob`);
    const h = await headManifest(BOB, API, 'v1');
    eq(h.status, 200, `HEAD /v2/${API}/manifests/v1 as bob afterwards`);
  });
  await check('bob: POST repository delete of demo/private/api with a valid csrf: 403, repository still there', async () => {
    const csrf = await signOutCsrf(bobPage);
    const url = `${BASE}${need('apiPath')}/delete`;
    const r = await bobPage.request.post(url, { form: { csrf }, maxRedirects: 0, headers: { Origin: BASE } });
    eq(r.status(), 403, `POST ${url} as bob`);
    eq(await registryTags(BOB, API), ['v1'], `GET /v2/${API}/tags/list as bob afterwards`);
  });

  // ---------------------------------------------------------------- 12. sign out
  console.log('\n== 12. sign out');
  let oldSession = null;
  await check('alice signs out: back on /ui/ anonymous, berth_session gone', async () => {
    const p = alicePage;
    await open(p, need('webPath'));
    oldSession = (await alice.cookies(BASE + '/ui/')).find((c) => c.name === 'berth_session') ?? null;
    ok(oldSession, 'berth_session before signing out');
    await navigate(p, () => p.getByRole('button', { name: 'Sign out', exact: true }).click());
    eq(pathOf(p), '/ui/', 'page after Sign out');
    const acct = await accountText(p);
    ok(!acct.includes('Signed in as'), `Account nav after sign-out: ${JSON.stringify(acct)}`);
    eq(await p.locator('nav[aria-label="Account"]').getByRole('link', { name: 'Sign in', exact: true }).count(), 1, 'Sign in link');
    const after = (await alice.cookies(BASE + '/ui/')).find((c) => c.name === 'berth_session');
    ok(!after || after.value !== oldSession.value, `berth_session after sign-out: ${JSON.stringify(after ?? null)}`);
    eq(await p.getByRole('link', { name: 'demo/private', exact: true }).count(), 0, 'links to demo/private after sign-out');
    eq(await p.getByRole('link', { name: 'demo/public', exact: true }).count(), 1, 'links to demo/public after sign-out');
  });
  await check('the old session cookie is invalid after sign-out (server side)', async () => {
    ok(oldSession, 'the session cookie from before sign-out');
    const ctx = await newContext();
    await ctx.addCookies([oldSession]);
    const p = await newPage(ctx);
    await open(p, '/ui/');
    const acct = await accountText(p);
    ok(!acct.includes('Signed in as'), `replaying the old berth_session: Account nav ${JSON.stringify(acct)}`);
    eq(await p.getByRole('link', { name: 'demo/private', exact: true }).count(), 0, 'links to demo/private with the old cookie');
    await ctx.close();
  });
  await check('after sign-out: the private repository URL is 404', async () => {
    await open(alicePage, need('apiPath'), 404);
    eq(await h1(alicePage), 'Not found', 'h1');
  });

  // ---------------------------------------------------------------- 14. 10k tags
  console.log(`\n== 14. ${MANY_COUNT} tags in ${MANY}`);
  const perPage = 20;
  const lastPageNo = Math.ceil(MANY_COUNT / perPage);
  const midPage = Math.max(1, Math.floor(lastPageNo / 2));
  const tname = (i) => `t${String(i).padStart(5, '0')}`;
  const range = (a, b) => Array.from({ length: Math.max(0, b - a) }, (_, i) => tname(a + i));
  const timings = [];
  // time GET (server only, via the request API) and the browser's page load
  const timed = async (label, url) => {
    const t0 = performance.now();
    const r = await ap.request.get(BASE + url);
    const server = performance.now() - t0;
    await r.body();
    const t1 = performance.now();
    await open(ap, url);
    const load = performance.now() - t1;
    const line = `TIMING: ${label}: HTTP ${r.status()} in ${server.toFixed(0)} ms (request), page load ${load.toFixed(0)} ms (${url})`;
    console.log(line);
    timings.push(line);
  };
  await check(`${MANY_COUNT} tags: page 1 by name says ${MANY_COUNT} tags, "Page 1 of ${lastPageNo}", rows ${tname(0)}..`, async () => {
    await timed('page 1, sort=name asc', withQuery(need('manyPath'), { sort: 'name', order: 'asc', per_page: perPage }));
    eq((await tagCount(ap)).n, MANY_COUNT, `#tag-count (${(await tagCount(ap)).text})`);
    ok((await paginationText(ap)).includes(`Page 1 of ${lastPageNo}`), `pagination: ${await paginationText(ap)}`);
    eq(await rows(ap), range(0, Math.min(perPage, MANY_COUNT)), 'rows of page 1');
  });
  await check(`${MANY_COUNT} tags: middle page ${midPage} and last page ${lastPageNo} hold the expected names`, async () => {
    await timed(`page ${midPage} (middle)`, withQuery(need('manyPath'), { sort: 'name', order: 'asc', per_page: perPage, page: midPage }));
    eq(await rows(ap), range((midPage - 1) * perPage, Math.min(midPage * perPage, MANY_COUNT)), `rows of page ${midPage}`);
    await timed(`page ${lastPageNo} (last)`, withQuery(need('manyPath'), { sort: 'name', order: 'asc', per_page: perPage, page: lastPageNo }));
    eq(await rows(ap), range((lastPageNo - 1) * perPage, MANY_COUNT), `rows of page ${lastPageNo}`);
    ok((await paginationText(ap)).includes(`Page ${lastPageNo} of ${lastPageNo}`), `pagination: ${await paginationText(ap)}`);
    await shot(ap, 'many-last-page');
  });
  await check(`${MANY_COUNT} tags: sort=published desc and sort=size desc give full pages`, async () => {
    await timed('page 1, sort=published desc', withQuery(need('manyPath'), { per_page: perPage, sort: 'published', order: 'desc' }));
    eq((await rows(ap)).length, Math.min(perPage, MANY_COUNT), 'rows by published desc');
    await timed('page 1, sort=size desc', withQuery(need('manyPath'), { per_page: perPage, sort: 'size', order: 'desc' }));
    eq((await rows(ap)).length, Math.min(perPage, MANY_COUNT), 'rows by size desc');
    await timed('page 1, sort=created desc', withQuery(need('manyPath'), { per_page: perPage, sort: 'created', order: 'desc' }));
    await timed('page 1, per_page=100', withQuery(need('manyPath'), { sort: 'name', order: 'asc', per_page: 100 }));
  });
  await check(`${MANY_COUNT} tags: search q=t0999 finds t09990..t09999`, async () => {
    await timed('search q=t0999', withQuery(need('manyPath'), { sort: 'name', order: 'asc', per_page: perPage, q: 't0999' }));
    const want = range(0, MANY_COUNT).filter((t) => t.includes('t0999'));
    eq(await rows(ap), want, 'rows for q=t0999');
    eq((await tagCount(ap)).n, want.length, '#tag-count for q=t0999');
  });
  if (timings.length) console.log(`\n${MANY_COUNT}-tag timings (not asserted):\n  ${timings.join('\n  ')}`);
}

// ------------------------------------------------------------------ run
const started = Date.now();
const watchdog = setTimeout(() => {
  console.log(`FAIL: ui.test.mjs watchdog: still running after ${((Date.now() - started) / 1000).toFixed(0)} s, giving up`);
  process.exit(3);
}, Number(process.env.UI_WATCHDOG_MS ?? 840000));
watchdog.unref();
try {
  await main();
} catch (e) {
  failed += 1;
  console.log(`FAIL: ui.test.mjs aborted: ${String(e?.message ?? e).split('\n')[0]}`);
  console.log(shorten(e?.stack ?? String(e)).replace(/^/gm, '    '));
} finally {
  await browser?.close().catch(() => {});
}
console.log(`\nscreenshots: ${SHOTS} (${shots.length} taken${failed ? ', plus fail-*.png' : ''})`);
for (const s of shots) console.log(`  ${path.basename(s)}`);
console.log(`SUMMARY: ${passed} passed, ${failed} failed (${((Date.now() - started) / 1000).toFixed(1)} s)`);
process.exit(failed || passed === 0 ? 1 : 0);
