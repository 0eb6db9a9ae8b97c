// magnum-rs dashboard. Hand-written, no framework, no build step: it talks to the same v1 API
// as every other client (the session cookie authenticates; X-CSRF-Token guards changes),
// follows the project's live event stream, and renders with DOM calls only (no innerHTML of
// data, so nothing a user stored can become markup).
'use strict';

(() => {
  // --- Where things are ------------------------------------------------------------------
  // The page is served at <root>/dashboard/; the API at <root>/v1 (a path prefix is kept).
  const PAGE_BASE = new URL('./', document.baseURI);
  const ROOT = new URL('../', PAGE_BASE);
  const SESSION_URL = new URL('session', PAGE_BASE).href;
  const v1 = (path) => new URL('v1' + path, ROOT).href;
  // Lists are read page by page up to this many items (the API caps a page itself).
  const MAX_LIST_ITEMS = 2000;
  // Events shown in a cluster's timeline (older ones stay readable through the API).
  const TIMELINE_LENGTH = 200;
  const POLL_INTERVAL_MS = 5000;

  const state = {
    session: null,
    navigation: 0,
    page: null,
    live: null,
    returnTo: null,
  };

  // --- DOM ---------------------------------------------------------------------------------
  function h(tag, attributes, ...children) {
    const element = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name.startsWith('on') && typeof value === 'function') {
        element.addEventListener(name.slice(2), value);
      } else if (name === 'class') {
        element.className = value;
      } else if (name === 'value' && (tag === 'input' || tag === 'textarea' || tag === 'select')) {
        element.value = value;
        if (tag !== 'select') element.setAttribute('value', value);
      } else {
        element.setAttribute(name, value === true ? '' : String(value));
      }
    }
    append(element, children);
    return element;
  }

  function append(element, children) {
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      element.append(child instanceof Node ? child : String(child));
    }
    return element;
  }

  function replaceContent(element, ...children) {
    // Keeps the focus where it was when the focused control is drawn again (same data-key).
    const focused = document.activeElement;
    const key = focused && element.contains(focused) ? focused.getAttribute('data-key') : null;
    element.replaceChildren();
    append(element, children);
    if (key) {
      const again = element.querySelector(`[data-key="${CSS.escape(key)}"]`);
      if (again) again.focus();
    }
  }

  let uniqueCounter = 0;
  const uniqueId = (prefix) => `${prefix}-${++uniqueCounter}`;

  function announce(message, kind = 'info') {
    const region = document.getElementById('status');
    region.dataset.kind = kind;
    region.textContent = message;
    clearTimeout(announce.timer);
    if (kind !== 'error') announce.timer = setTimeout(() => { region.textContent = ''; }, 8000);
  }

  function time(value) {
    if (!value) return '—';
    const date = new Date(value);
    if (Number.isNaN(date.getTime())) return value;
    return h('time', { datetime: date.toISOString(), title: date.toISOString() }, date.toLocaleString());
  }

  function statusKind(status) {
    if (!status) return '';
    if (status.endsWith('_COMPLETE') || status === 'HEALTHY' || status === 'up') return 'ok';
    if (status.endsWith('_IN_PROGRESS')) return 'busy';
    if (status.endsWith('_FAILED') || status === 'UNHEALTHY' || status === 'down') return 'bad';
    return '';
  }

  function badge(text, attributes = {}) {
    const shown = text || '—';
    return h('span', { class: `badge ${statusKind(text)}`, ...attributes }, shown);
  }

  function healthBadge(health, attributes = {}) {
    return badge(health || 'UNKNOWN', { title: 'Health', ...attributes });
  }

  function tableOf(headers, rows, caption) {
    return h('div', { class: 'table-wrap' },
      h('table', {},
        caption ? h('caption', { class: 'visually-hidden' }, caption) : null,
        h('thead', {}, h('tr', {}, headers.map((header) =>
          h('th', { scope: 'col', class: header.class || null }, header.label || header)))),
        h('tbody', {}, rows)));
  }

  function facts(pairs, columns = 1) {
    return h('dl', { class: columns === 2 ? 'facts two' : 'facts' }, pairs.filter(Boolean).map(([term, value]) =>
      [h('dt', {}, term), h('dd', {}, value === null || value === undefined || value === '' ? '—' : value)]));
  }

  function labelsText(labels) {
    const entries = Object.entries(labels || {});
    if (!entries.length) return '—';
    return h('span', { class: 'mono' }, entries.map(([key, value]) => `${key}=${value}`).join(', '));
  }

  // --- The API -----------------------------------------------------------------------------
  class ApiError extends Error {
    constructor(status, detail, title) {
      super(detail || title || `The server answered ${status}.`);
      this.status = status;
      this.detail = detail || this.message;
      this.title = title || '';
    }
  }

  function errorFrom(status, body, raw) {
    // Magnum's envelope; keystonemiddleware's for 401s; anything else as text.
    if (body && Array.isArray(body.errors) && body.errors.length) {
      const first = body.errors[0];
      return new ApiError(status, first.detail || first.title, first.title);
    }
    if (body && body.error && typeof body.error === 'object') {
      return new ApiError(status, body.error.message || body.error.title, body.error.title);
    }
    const text = (raw || '').trim();
    return new ApiError(status, text && text.length < 400 && !text.startsWith('<') ? text : `The server answered ${status}.`);
  }

  async function request(method, url, body) {
    const headers = { Accept: 'application/json', 'OpenStack-API-Version': 'container-infra latest' };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    if (method !== 'GET' && state.session && state.session.csrf_token) {
      headers['X-CSRF-Token'] = state.session.csrf_token;
    }
    let response;
    try {
      response = await fetch(url, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        credentials: 'same-origin',
        cache: 'no-store',
      });
    } catch {
      throw new ApiError(0, 'The server cannot be reached. Check the connection and try again.');
    }
    const raw = response.status === 204 ? '' : await response.text();
    let json = null;
    if (raw) {
      try { json = JSON.parse(raw); } catch { json = null; }
    }
    if (!response.ok) {
      const error = errorFrom(response.status, json, raw);
      if (response.status === 401 && url !== SESSION_URL && state.session) sessionLost();
      throw error;
    }
    return json;
  }

  const api = {
    get: (path) => request('GET', v1(path)),
    post: (path, body) => request('POST', v1(path), body),
    patch: (path, body) => request('PATCH', v1(path), body),
    delete: (path) => request('DELETE', v1(path)),
  };

  // Every page of a list (the `next` links), up to MAX_LIST_ITEMS.
  async function listAll(path, key) {
    const items = [];
    let url = v1(path);
    while (url && items.length < MAX_LIST_ITEMS) {
      const page = await request('GET', url);
      const found = (page && page[key]) || [];
      items.push(...found);
      if (!page || !page.next || !found.length) break;
      const next = new URL(page.next, ROOT);
      url = new URL(next.pathname + next.search, location.origin).href;
    }
    return items;
  }

  const enc = encodeURIComponent;

  // --- Session -----------------------------------------------------------------------------
  async function loadSession() {
    try {
      return await request('GET', SESSION_URL);
    } catch (error) {
      if (error.status === 401) return null;
      throw error;
    }
  }

  function isAdmin() {
    return Boolean(state.session && (state.session.roles || []).some((role) => role.toLowerCase() === 'admin'));
  }

  function setSession(session) {
    const previousProject = state.session && state.session.project && state.session.project.id;
    state.session = session;
    document.getElementById('nav').hidden = !session;
    for (const item of document.querySelectorAll('.admin-only')) item.hidden = !isAdmin();
    drawAccount();
    if (!session) {
      if (state.live) state.live.stop();
      return;
    }
    if (!state.live) state.live = new LiveStream();
    if (!state.live.running || previousProject !== session.project.id) state.live.start();
  }

  function sessionLost() {
    // A request refused while the user logs out is the logout itself, not a lost session.
    if (state.loggingOut || !state.session || state.session.auth !== 'keystone') return;
    setSession(null);
    announce('Your session ended. Log in again to go on.', 'error');
    state.returnTo = location.hash;
    if (location.hash !== '#/login') location.hash = '#/login';
    else route();
  }

  function drawAccount() {
    const account = document.getElementById('account');
    const session = state.session;
    account.hidden = !session;
    if (!session) {
      account.replaceChildren();
      return;
    }
    const liveIndicator = h('span', { class: 'live', id: 'live-indicator', 'data-mode': state.live ? state.live.mode : 'connecting' },
      state.live ? state.live.label() : 'Connecting…');
    let project;
    const projects = session.projects || [];
    if (projects.length > 1) {
      const id = uniqueId('project');
      const select = h('select', { id, name: 'project', onchange: (event) => switchProject(event.target.value, select) },
        projects.map((item) => h('option', { value: item.id, selected: item.id === session.project.id }, item.name || item.id)));
      select.value = session.project.id;
      project = [h('label', { for: id }, 'Project'), select];
    } else {
      project = h('span', { title: session.project.id }, 'Project ', h('strong', { id: 'project-name' }, session.project.name || session.project.id));
    }
    const user = session.auth === 'keystone'
      ? h('span', {}, h('span', { class: 'visually-hidden' }, 'Signed in as '), h('strong', { id: 'user-name' }, session.user.name || session.user.id))
      : h('span', { class: 'muted', title: 'auth.strategy = "noauth": every request acts as this identity' }, 'noauth');
    const logout = session.auth === 'keystone'
      ? h('button', { type: 'button', id: 'logout', onclick: logOut }, 'Log out')
      : null;
    account.replaceChildren();
    append(account, [liveIndicator, project, user, logout]);
  }

  async function switchProject(projectId, select) {
    select.disabled = true;
    try {
      const session = await request('POST', new URL('session/project', PAGE_BASE).href, { project_id: projectId });
      setSession((await loadSession().catch(() => null)) || session);
      announce(`Now working in project ${session.project.name || session.project.id}.`, 'ok');
      // A cluster or template of the other project is not visible from this one.
      if (/^#\/(clusters|templates)\/[^/?]+/.test(location.hash) && !/\/new/.test(location.hash)) {
        location.hash = location.hash.startsWith('#/templates') ? '#/templates' : '#/clusters';
      } else {
        route();
      }
    } catch (error) {
      announce(`The project could not be switched: ${error.detail}`, 'error');
      select.value = state.session.project.id;
    } finally {
      select.disabled = false;
    }
  }

  async function logOut() {
    // The session ends in every API process before Keystone is told: the page's other
    // requests meanwhile are refused, and must not make the next login come back here.
    state.loggingOut = true;
    try {
      await request('DELETE', SESSION_URL);
    } catch (error) {
      if (error.status !== 401) {
        announce(`Logging out failed: ${error.detail}`, 'error');
        return;
      }
    } finally {
      state.loggingOut = false;
    }
    setSession(null);
    state.returnTo = null;
    announce('You are logged out.', 'ok');
    location.hash = '#/login';
  }

  // --- Live events -------------------------------------------------------------------------
  // One stream of the project's events (GET /v1/events?watch=true) feeds every page: each
  // event carries the cluster's status, health and counts after the change. Polling is only
  // the fallback for a stream that cannot be had (refused, or ending as unavailable, again
  // and again); the stream is tried again meanwhile.
  class LiveStream {
    constructor() {
      this.source = null;
      this.mode = 'connecting';
      this.failures = 0;
      this.errorsInRow = 0;
      this.running = false;
      this.opened = false;
      this.retryTimer = null;
      this.pollTimer = null;
    }

    label() {
      return { live: 'Live', polling: 'Polling', connecting: 'Connecting…', offline: 'Offline' }[this.mode] || this.mode;
    }

    setMode(mode) {
      this.mode = mode;
      const indicator = document.getElementById('live-indicator');
      if (indicator) {
        indicator.dataset.mode = mode;
        indicator.textContent = this.label();
        indicator.title = mode === 'live' ? 'Status changes arrive as they happen' : mode === 'polling'
          ? `The event stream is not available: the page reloads its data every ${POLL_INTERVAL_MS / 1000} s` : '';
      }
    }

    start() {
      this.stop();
      this.running = true;
      this.failures = 0;
      this.open();
    }

    stop() {
      this.running = false;
      clearTimeout(this.retryTimer);
      clearTimeout(this.provenTimer);
      this.stopPolling();
      if (this.source) this.source.close();
      this.source = null;
      this.opened = false;
    }

    open() {
      if (!this.running) return;
      if (typeof EventSource === 'undefined') {
        this.startPolling();
        return;
      }
      const source = new EventSource(v1('/events?watch=true'));
      this.source = source;
      this.setMode('connecting');
      source.onopen = () => {
        const resumed = this.failures > 0 || this.mode === 'polling';
        // The back-off is forgiven only once the stream has proved itself (an event, or 30 s
        // open): a server that opens streams and ends them at once as `unavailable` would
        // otherwise be asked again every 2 s by every open tab.
        clearTimeout(this.provenTimer);
        this.provenTimer = setTimeout(() => { this.failures = 0; }, 30000);
        this.errorsInRow = 0;
        this.stopPolling();
        this.setMode('live');
        // A fresh connection after a gap: what happened meanwhile is read once.
        if (resumed || this.opened) refreshPage();
        this.opened = true;
      };
      source.addEventListener('cluster_event', (message) => {
        this.failures = 0;
        let event;
        try { event = JSON.parse(message.data); } catch { return; }
        dispatchEvent(event);
      });
      // Events this tab should have had were dropped by retention (it fell behind, or
      // resumed from further back than the server keeps): what the page shows is read again.
      source.addEventListener('gap', () => refreshPage());
      source.addEventListener('end', (message) => {
        let data = {};
        try { data = JSON.parse(message.data); } catch { data = {}; }
        if (data.reason === 'token_expired') {
          this.stop();
          recheckSession();
        } else if (data.reason === 'unavailable') {
          this.failure();
        }
        // max_duration, server_stopping: EventSource reconnects by itself with Last-Event-ID.
      });
      source.onerror = () => {
        if (source !== this.source) return;
        if (source.readyState === EventSource.CLOSED) {
          // Refused (not a stream: 401, 503, …): EventSource does not retry; we do.
          this.failure();
          return;
        }
        this.setMode('connecting');
        this.errorsInRow += 1;
        if (this.errorsInRow >= 3) this.failure();
      };
    }

    failure() {
      if (!this.running) return;
      clearTimeout(this.provenTimer);
      if (this.source) this.source.close();
      this.source = null;
      this.failures += 1;
      this.errorsInRow = 0;
      if (this.failures >= 3) this.startPolling();
      else this.setMode('connecting');
      if (this.failures === 2) recheckSession();
      const delay = Math.min(60000, 2000 * 2 ** (this.failures - 1));
      clearTimeout(this.retryTimer);
      this.retryTimer = setTimeout(() => this.open(), delay);
    }

    startPolling() {
      this.setMode('polling');
      if (this.pollTimer) return;
      this.pollTimer = setInterval(refreshPage, POLL_INTERVAL_MS);
    }

    stopPolling() {
      clearInterval(this.pollTimer);
      this.pollTimer = null;
    }
  }

  // Events that arrive while a page is still reading its data wait for its handler (a
  // page sets `onEvent` once it has something to apply them to); duplicates are the page's
  // to skip (by sequence).
  const MAX_PENDING_EVENTS = 500;
  function dispatchEvent(event) {
    const page = state.page;
    if (!page) return;
    if (page.onEvent) page.onEvent(event);
    else if (page.pending.length < MAX_PENDING_EVENTS) page.pending.push(event);
  }

  function listen(page, handler) {
    page.onEvent = handler;
    const pending = page.pending.splice(0);
    for (const event of pending) handler(event);
  }

  function refreshPage() {
    const page = state.page;
    if (page && page.refresh) page.refresh();
  }

  async function recheckSession() {
    if (!state.session || state.session.auth !== 'keystone') return;
    try {
      const session = await loadSession();
      if (!session) sessionLost();
      else if (!state.live.running) {
        state.session = session;
        state.live.start();
      }
    } catch {
      // The server is away: the stream's own retries go on.
    }
  }

  // --- Routing -----------------------------------------------------------------------------
  const ROUTES = [
    [/^\/?$/, null, () => { location.replace('#/clusters'); }],
    [/^\/login$/, null, renderLogin],
    [/^\/clusters$/, 'clusters', renderClusterList],
    [/^\/clusters\/new$/, 'clusters', renderClusterCreate],
    [/^\/clusters\/([^/]+)$/, 'clusters', renderClusterDetail],
    [/^\/templates$/, 'templates', renderTemplateList],
    [/^\/templates\/new$/, 'templates', renderTemplateForm],
    [/^\/templates\/([^/]+)$/, 'templates', renderTemplateDetail],
    [/^\/quotas$/, 'quotas', renderQuotas],
    [/^\/services$/, 'services', renderServices],
  ];

  function route() {
    const hash = location.hash.replace(/^#/, '') || '/';
    const [path, queryText] = hash.split('?');
    const query = new URLSearchParams(queryText || '');
    if (state.page && state.page.cleanup) state.page.cleanup();
    state.navigation += 1;
    const main = document.getElementById('main');
    const page = {
      token: state.navigation,
      main,
      onEvent: null,
      pending: [],
      refresh: null,
      cleanup: null,
      alive() { return this.token === state.navigation; },
    };
    state.page = page;
    if (!state.session && path !== '/login') {
      state.returnTo = location.hash;
      location.replace('#/login');
      return;
    }
    if (state.session && path === '/login') {
      location.replace('#/clusters');
      return;
    }
    for (const [pattern, section, render] of ROUTES) {
      const match = path.match(pattern);
      if (!match) continue;
      for (const link of document.querySelectorAll('#nav a')) {
        if (link.dataset.section === section) link.setAttribute('aria-current', 'page');
        else link.removeAttribute('aria-current');
      }
      // A hand-typed `#/clusters/%E0` is no page, not a page stuck loading.
      let parameters;
      try { parameters = match.slice(1).map(decodeURIComponent); } catch { break; }
      main.replaceChildren(h('p', { class: 'loading' }, 'Loading…'));
      Promise.resolve(render(page, parameters, query)).catch((error) => {
        if (page.alive()) showPageError(page, error);
      });
      return;
    }
    setTitle('Not found');
    main.replaceChildren(h('h1', { tabindex: '-1' }, 'Not found'), h('p', {}, 'This page does not exist. ', h('a', { href: '#/clusters' }, 'Go to the clusters.')));
  }

  function setTitle(title) {
    document.title = `${title} · magnum-rs`;
  }

  // Puts a page's content in place and moves the focus to its heading (the route changed).
  function show(page, ...children) {
    if (!page.alive()) return false;
    page.main.replaceChildren();
    append(page.main, children);
    const heading = page.main.querySelector('h1');
    if (heading) {
      heading.setAttribute('tabindex', '-1');
      if (!page.focused) heading.focus({ preventScroll: true });
      page.focused = true;
    }
    // The first page with its data on screen (scripts/bench-dashboard reads this mark).
    if (!show.marked && performance.mark) {
      show.marked = true;
      performance.mark('magnum:first-page');
    }
    return true;
  }

  function showPageError(page, error) {
    const detail = error instanceof ApiError ? error.detail : String(error && error.message || error);
    show(page, h('h1', {}, error.status === 404 ? 'Not found' : 'Something went wrong'),
      h('p', { class: 'form-error', role: 'alert' }, detail),
      h('p', {}, h('a', { href: '#/clusters' }, 'Back to the clusters')));
  }

  // --- Forms -------------------------------------------------------------------------------
  // A labelled control with a hint and a place for its error (both tied to it for screen
  // readers).
  function field(label, control, hint) {
    const id = control.id || uniqueId(`f-${control.name || 'field'}`);
    control.id = id;
    const errorId = `${id}-error`;
    const hintId = hint ? `${id}-hint` : null;
    control.setAttribute('aria-describedby', [hintId, errorId].filter(Boolean).join(' '));
    const isCheck = control.type === 'checkbox';
    return h('div', { class: isCheck ? 'field check' : 'field' },
      isCheck ? control : null,
      h('label', { for: id }, label),
      isCheck ? null : control,
      hint ? h('p', { class: 'hint', id: hintId }, hint) : null,
      h('p', { class: 'field-error', id: errorId }));
  }

  function input(name, attributes = {}) {
    return h('input', { name, type: 'text', ...attributes });
  }

  function checkbox(name, checked) {
    return h('input', { name, type: 'checkbox', checked: Boolean(checked) });
  }

  function select(name, options, selected, attributes = {}) {
    const control = h('select', { name, ...attributes }, options.map(([value, label]) =>
      h('option', { value, selected: value === selected }, label)));
    if (selected !== undefined) control.value = selected;
    return control;
  }

  function formError() {
    return h('div', { class: 'form-error', role: 'alert', tabindex: '-1' });
  }

  function clearErrors(form) {
    for (const box of form.querySelectorAll('.field-error, .form-error')) box.textContent = '';
    for (const control of form.querySelectorAll('[aria-invalid]')) control.removeAttribute('aria-invalid');
  }

  // Which control an API message is about: a field named in it (upstream's "Invalid input
  // for field/attribute X"), a control whose value it quotes, then words it uses.
  const FIELD_WORDS = [
    [/master flavor/i, 'master_flavor_id'],
    [/\bflavor\b/i, 'flavor_id'],
    [/\bimage\b/i, 'image_id'],
    [/external network/i, 'external_network_id'],
    [/fixed subnet/i, 'fixed_subnet'],
    [/fixed network/i, 'fixed_network'],
    [/network driver/i, 'network_driver'],
    [/volume driver/i, 'volume_driver'],
    [/docker volume size/i, 'docker_volume_size'],
    [/keypair|key pair/i, ['keypair_id', 'keypair']],
    [/\blabels?\b/i, 'labels'],
    [/master count|masters?\b/i, 'master_count'],
    [/node count|node_count|nodes?\b/i, 'node_count'],
    [/cluster template|template/i, ['cluster_template_id', 'cluster_template']],
    [/\bname\b/i, 'name'],
  ];

  function fieldFor(form, detail) {
    const controls = [...form.elements].filter((control) => control.name);
    const byName = (name) => controls.find((control) => control.name === name);
    const named = /field\/attribute ([A-Za-z_]+)/.exec(detail) || /\b([a-z]+(?:_[a-z]+)+)\b/.exec(detail);
    if (named && byName(named[1])) return byName(named[1]);
    const quoted = controls.find((control) => control.type !== 'checkbox' && control.type !== 'password'
      && control.value && control.value.length > 1 && detail.includes(control.value));
    if (quoted) return quoted;
    for (const [pattern, names] of FIELD_WORDS) {
      if (!pattern.test(detail)) continue;
      for (const name of [].concat(names)) if (byName(name)) return byName(name);
    }
    return null;
  }

  function showFormError(form, error) {
    clearErrors(form);
    const detail = error instanceof ApiError ? error.detail : String(error && error.message || error);
    const summary = form.querySelector('.form-error');
    const control = error.field ? form.elements[error.field] : fieldFor(form, detail);
    if (summary) summary.textContent = detail;
    if (control && control.id) {
      control.setAttribute('aria-invalid', 'true');
      const box = document.getElementById(`${control.id}-error`);
      if (box) box.textContent = detail;
      const details = control.closest('details');
      if (details) details.open = true;
      control.focus();
    } else if (summary) {
      summary.focus();
    }
  }

  // Runs `work` for a form's submit: buttons off while it runs, errors shown in the form.
  function onSubmit(form, work) {
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      clearErrors(form);
      const buttons = [...form.querySelectorAll('button')];
      for (const button of buttons) button.disabled = true;
      form.setAttribute('aria-busy', 'true');
      try {
        await work(form);
      } catch (error) {
        showFormError(form, error);
      } finally {
        form.removeAttribute('aria-busy');
        for (const button of buttons) button.disabled = false;
      }
    });
    return form;
  }

  class FieldError extends Error {
    constructor(field, message) {
      super(message);
      this.field = field;
      this.detail = message;
    }
  }

  // "key=value" per line or comma-separated, as `--labels` takes them.
  function parseLabels(text, fieldName = 'labels') {
    const labels = {};
    for (const part of text.split(/[\n,]/)) {
      const item = part.trim();
      if (!item) continue;
      const at = item.indexOf('=');
      if (at <= 0) throw new FieldError(fieldName, `Labels are key=value pairs; "${item}" has no "=".`);
      labels[item.slice(0, at).trim()] = item.slice(at + 1).trim();
    }
    return labels;
  }

  function integerOf(form, name) {
    const text = (form.elements[name].value || '').trim();
    if (!text) return undefined;
    const number = Number(text);
    if (!Number.isInteger(number)) throw new FieldError(name, `${text} is not a whole number.`);
    return number;
  }

  function textOf(form, name) {
    const control = form.elements[name];
    const text = control ? control.value.trim() : '';
    return text || undefined;
  }

  // A modal dialog (native <dialog>: focus trapped, Escape closes) holding a form.
  function openDialog({ title, intro, fields = [], confirm, danger = false, submit }) {
    const opener = document.activeElement;
    const titleId = uniqueId('dialog-title');
    const cancel = h('button', { type: 'button', class: 'cancel' }, 'Cancel');
    const form = h('form', { novalidate: true },
      h('h2', { id: titleId }, title),
      intro ? h('p', {}, intro) : null,
      formError(),
      fields,
      h('div', { class: 'actions' },
        h('button', { type: 'submit', class: danger ? 'danger solid' : 'primary' }, confirm),
        cancel));
    const dialog = h('dialog', { 'aria-labelledby': titleId }, form);
    cancel.addEventListener('click', () => dialog.close());
    dialog.addEventListener('close', () => {
      dialog.remove();
      if (opener && opener.isConnected) opener.focus();
    });
    onSubmit(form, async () => {
      await submit(form);
      dialog.close();
    });
    document.body.append(dialog);
    dialog.showModal();
    // Destructive dialogs start on Cancel; others on their first control.
    const first = danger ? cancel : form.querySelector('input, select, textarea') || cancel;
    first.focus();
    return dialog;
  }

  // --- Login -------------------------------------------------------------------------------
  function renderLogin(page) {
    setTitle('Log in');
    const form = h('form', { class: 'panel', novalidate: true },
      formError(),
      field('User name', input('username', { autocomplete: 'username', required: true })),
      field('Password', input('password', { type: 'password', autocomplete: 'current-password', required: true })),
      field('User domain', input('user_domain', { value: 'Default', autocomplete: 'off' })),
      field('Project', input('project', { autocomplete: 'off' }), 'Leave empty to use your first project.'),
      field('Project domain', input('project_domain', { value: 'Default', autocomplete: 'off' })),
      h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary' }, 'Log in')));
    onSubmit(form, async () => {
      const username = textOf(form, 'username');
      if (!username) throw new FieldError('username', 'Enter your user name.');
      if (!form.elements.password.value) throw new FieldError('password', 'Enter your password.');
      const session = await request('POST', SESSION_URL, {
        username,
        password: form.elements.password.value,
        user_domain: textOf(form, 'user_domain') || 'Default',
        project: textOf(form, 'project') || '',
        project_domain: textOf(form, 'project_domain') || 'Default',
      }).catch((error) => {
        form.elements.password.value = '';
        throw error;
      });
      // The login's answer names only the project logged in to; the session's own
      // description lists every project of the user (for the switcher).
      setSession((await loadSession().catch(() => null)) || session);
      announce(`Logged in to project ${session.project.name || session.project.id}.`, 'ok');
      const target = state.returnTo && state.returnTo !== '#/login' ? state.returnTo : '#/clusters';
      state.returnTo = null;
      location.hash = target;
    });
    show(page, h('div', { class: 'login' },
      h('h1', {}, 'Log in'),
      h('p', { class: 'muted' }, 'Use your OpenStack (Keystone) account.'),
      form));
  }

  // --- Clusters ----------------------------------------------------------------------------
  async function templateNames() {
    const templates = await listAll('/clustertemplates', 'clustertemplates');
    return new Map(templates.map((template) => [template.uuid, template]));
  }

  async function renderClusterList(page) {
    setTitle('Clusters');
    const body = h('div', {});
    let rows = new Map();
    let reloadTimer = null;
    const load = async () => {
      const [clusters, templates] = await Promise.all([
        listAll('/clusters', 'clusters'),
        templateNames().catch(() => new Map()),
      ]);
      if (!page.alive()) return;
      rows = new Map();
      if (!clusters.length) {
        replaceContent(body, h('p', { class: 'empty' }, 'No clusters yet. ',
          h('a', { href: '#/clusters/new' }, 'Create one'), ' from a cluster template.'));
        return;
      }
      const tableRows = clusters.map((cluster) => {
        const template = templates.get(cluster.cluster_template_id);
        const status = badge(cluster.status, { 'data-field': 'status' });
        const health = healthBadge(cluster.health_status, { 'data-field': 'health' });
        const masters = h('td', { class: 'num wide-only' }, cluster.master_count);
        const nodes = h('td', { class: 'num' }, cluster.node_count);
        const row = h('tr', { 'data-uuid': cluster.uuid },
          h('td', {}, h('a', { href: `#/clusters/${cluster.uuid}`, 'data-key': `cluster-${cluster.uuid}` }, cluster.name || cluster.uuid)),
          h('td', {}, status),
          h('td', {}, health),
          h('td', { class: 'wide-only' }, template ? h('a', { href: `#/templates/${template.uuid}` }, template.name || template.uuid) : h('span', { class: 'mono' }, cluster.cluster_template_id)),
          masters, nodes);
        rows.set(cluster.uuid, { row, status, health, masters, nodes });
        return row;
      });
      replaceContent(body, tableOf([
        'Name', 'Status', 'Health', { label: 'Template', class: 'wide-only' },
        { label: 'Masters', class: 'num wide-only' }, { label: 'Nodes', class: 'num' },
      ], tableRows, 'Clusters'));
    };
    page.refresh = () => load().catch(() => {});
    listen(page, (event) => {
      const known = rows.get(event.cluster_uuid);
      if (known && event.reason !== 'Deleted') {
        const snapshot = event.cluster || {};
        known.status.textContent = snapshot.status || '—';
        known.status.className = `badge ${statusKind(snapshot.status)}`;
        known.health.textContent = snapshot.health_status || 'UNKNOWN';
        known.health.className = `badge ${statusKind(snapshot.health_status)}`;
        known.masters.textContent = snapshot.master_count;
        known.nodes.textContent = snapshot.node_count;
        return;
      }
      // A new or deleted cluster: the list is read again (once for a burst of events).
      clearTimeout(reloadTimer);
      reloadTimer = setTimeout(page.refresh, 300);
    });
    page.cleanup = () => clearTimeout(reloadTimer);
    await load();
    show(page,
      h('div', { class: 'page-head' },
        h('h1', {}, 'Clusters'),
        h('a', { class: 'button primary', href: '#/clusters/new', id: 'create-cluster' }, 'Create cluster')),
      body);
  }

  async function renderClusterCreate(page, _params, query) {
    setTitle('Create a cluster');
    const templates = await listAll('/clustertemplates', 'clustertemplates');
    if (!page.alive()) return;
    if (!templates.length) {
      show(page, h('h1', {}, 'Create a cluster'), h('p', { class: 'empty' }, 'A cluster is made from a cluster template, and there is none yet. ',
        h('a', { href: '#/templates/new' }, 'Create a template'), ' first.'));
      return;
    }
    const chosen = query.get('template') || templates[0].uuid;
    const tristate = (name) => select(name, [['', "Template's setting"], ['true', 'Yes'], ['false', 'No']], '');
    const form = h('form', { novalidate: true, id: 'cluster-form' },
      formError(),
      h('fieldset', {}, h('legend', {}, 'Cluster'),
        h('div', { class: 'grid' },
          field('Name', input('name', { autocomplete: 'off', placeholder: 'generated when empty' }),
            'Starts with a letter; letters, digits, "_", "-" and "." follow.'),
          field('Cluster template', select('cluster_template_id', templates.map((template) =>
            [template.uuid, `${template.name || template.uuid} (${template.coe})`]), chosen, { required: true })),
          field('Masters', input('master_count', { type: 'number', min: 1, value: '1', inputmode: 'numeric' })),
          field('Worker nodes', input('node_count', { type: 'number', min: 0, value: '1', inputmode: 'numeric' })),
          field('Keypair', input('keypair', { autocomplete: 'off' }), "The template's when empty."))),
      h('details', { class: 'advanced' }, h('summary', {}, 'More options'),
        h('fieldset', {}, h('legend', {}, 'Overrides of the template'),
          h('div', { class: 'grid' },
            field('Master flavor', input('master_flavor_id', { autocomplete: 'off' })),
            field('Worker flavor', input('flavor_id', { autocomplete: 'off' })),
            field('Docker volume size (GB)', input('docker_volume_size', { type: 'number', min: 1, inputmode: 'numeric' })),
            field('Create timeout (minutes)', input('create_timeout', { type: 'number', min: 0, inputmode: 'numeric' })),
            field('Load balancer for the masters', tristate('master_lb_enabled')),
            field('Floating IPs', tristate('floating_ip_enabled')),
            field('Fixed network', input('fixed_network', { autocomplete: 'off' })),
            field('Fixed subnet', input('fixed_subnet', { autocomplete: 'off' }))),
          field('Labels', h('textarea', { name: 'labels', rows: 3, spellcheck: 'false' }), 'key=value, one per line.'),
          field('Merge with the template\'s labels', checkbox('merge_labels', false)))),
      h('div', { class: 'actions' },
        h('button', { type: 'submit', class: 'primary' }, 'Create cluster'),
        h('a', { class: 'button', href: '#/clusters' }, 'Cancel')));
    onSubmit(form, async () => {
      const body = { cluster_template_id: form.elements.cluster_template_id.value };
      for (const name of ['name', 'keypair', 'master_flavor_id', 'flavor_id', 'fixed_network', 'fixed_subnet']) {
        const value = textOf(form, name);
        if (value !== undefined) body[name] = value;
      }
      for (const name of ['master_count', 'node_count', 'docker_volume_size', 'create_timeout']) {
        const value = integerOf(form, name);
        if (value !== undefined) body[name] = value;
      }
      for (const name of ['master_lb_enabled', 'floating_ip_enabled']) {
        const value = form.elements[name].value;
        if (value) body[name] = value === 'true';
      }
      const labels = parseLabels(form.elements.labels.value);
      if (Object.keys(labels).length) body.labels = labels;
      if (form.elements.merge_labels.checked) body.merge_labels = true;
      const created = await api.post('/clusters', body);
      announce(`Cluster ${body.name || created.uuid} is being created.`, 'ok');
      location.hash = `#/clusters/${created.uuid}`;
    });
    show(page, h('h1', {}, 'Create a cluster'), form);
  }

  // Nodes and their health, read off health_status_reason: "<node>.Ready": "True"/"False"
  // per node (what drivers report), other keys are checks of the cluster itself ("api").
  function nodeHealth(reason) {
    const nodes = [];
    const checks = [];
    for (const [key, value] of Object.entries(reason || {})) {
      const match = /^(.+)\.Ready$/.exec(key);
      if (match) nodes.push({ name: match[1], ready: String(value) });
      else checks.push({ name: key, value: typeof value === 'string' ? value : JSON.stringify(value) });
    }
    nodes.sort((left, right) => left.name.localeCompare(right.name, undefined, { numeric: true }));
    return { nodes, checks };
  }

  function eventItem(event, fresh) {
    const warning = event.type === 'Warning';
    const where = [event.nodegroup && `nodegroup ${event.nodegroup}`, event.node && `node ${event.node}`].filter(Boolean).join(', ');
    return h('li', { class: fresh ? 'fresh' : null, 'data-sequence': event.sequence },
      time(event.created_at),
      h('span', { class: 'what' },
        warning ? h('span', { class: 'badge warn' }, 'Warning') : null, warning ? ' ' : null,
        event.reason,
        where ? h('span', { class: 'muted' }, ` · ${where}`) : null),
      h('span', { class: 'message' }, event.message));
  }

  async function renderClusterDetail(page, [ident]) {
    const [cluster, events] = await Promise.all([
      api.get(`/clusters/${enc(ident)}`),
      api.get(`/clusters/${enc(ident)}/events?limit=${TIMELINE_LENGTH}&sort_dir=desc`).catch(() => ({ events: [] })),
    ]);
    if (!page.alive()) return;
    let current = cluster;
    let template = null;
    let nodegroups = [];
    let deleted = false;
    const uuid = cluster.uuid;
    setTitle(cluster.name || uuid);

    const statusBadge = badge(cluster.status, { id: 'cluster-status' });
    const healthEl = healthBadge(cluster.health_status, { id: 'cluster-health' });
    const reasonEl = h('p', { class: 'muted', id: 'status-reason' });
    const overview = h('section', { 'aria-labelledby': 'overview-title', class: 'panel' });
    const nodegroupSection = h('div', {});
    const nodesSection = h('div', {});
    const connectSection = h('div', {});
    const seen = new Set();
    const timeline = h('ol', { class: 'timeline', id: 'timeline', role: 'log', 'aria-live': 'polite', 'aria-label': 'Events, newest first' });
    for (const event of events.events || []) {
      seen.add(event.sequence);
      timeline.append(eventItem(event, false));
    }
    const emptyTimeline = h('p', { class: 'muted', hidden: timeline.children.length > 0 }, 'No events yet.');

    const drawStatus = (snapshot) => {
      statusBadge.textContent = snapshot.status || '—';
      statusBadge.className = `badge ${statusKind(snapshot.status)}`;
      healthEl.textContent = snapshot.health_status || 'UNKNOWN';
      healthEl.className = `badge ${statusKind(snapshot.health_status)}`;
    };

    const drawAll = () => {
      const c = current;
      drawStatus(c);
      reasonEl.textContent = c.status_reason || '';
      replaceContent(overview,
        h('h2', { id: 'overview-title' }, 'Overview'),
        facts([
          ['UUID', h('span', { class: 'mono' }, c.uuid)],
          ['Template', template ? h('a', { href: `#/templates/${template.uuid}` }, template.name || template.uuid) : h('span', { class: 'mono' }, c.cluster_template_id)],
          ['COE', template ? template.coe : null],
          ['COE version', c.coe_version],
          ['API address', c.api_address ? h('span', { class: 'mono', id: 'api-address' }, c.api_address) : null],
          ['Masters', `${c.master_count}${(c.master_addresses || []).length ? ` (${c.master_addresses.join(', ')})` : ''}`],
          ['Worker nodes', `${c.node_count}${(c.node_addresses || []).length ? ` (${c.node_addresses.join(', ')})` : ''}`],
          ['Keypair', c.keypair],
          ['Flavors', [c.master_flavor_id && `masters ${c.master_flavor_id}`, c.flavor_id && `workers ${c.flavor_id}`].filter(Boolean).join(', ')],
          ['Labels', labelsText(c.labels)],
          ['Created', time(c.created_at)],
          ['Updated', time(c.updated_at)],
          isAdmin() ? ['Project', h('span', { class: 'mono' }, c.project_id)] : null,
        ], 2));
      drawNodegroups();
      drawNodes();
      drawConnect();
    };

    const drawNodegroups = () => {
      const rows = nodegroups.map((group) => h('tr', { 'data-nodegroup': group.name },
        h('td', {}, group.name, group.is_default ? h('span', { class: 'muted' }, ' (default)') : null),
        h('td', {}, group.role),
        h('td', { class: 'num' }, group.node_count),
        h('td', { class: 'num wide-only' }, `${group.min_node_count ?? 0}–${group.max_node_count ?? '∞'}`),
        h('td', { class: 'wide-only' }, group.flavor_id || '—'),
        h('td', {}, badge(group.status)),
        h('td', {}, h('div', { class: 'actions' },
          h('button', { type: 'button', class: 'link', 'data-key': `resize-${group.name}`, onclick: () => resizeDialog(group.name) }, 'Resize', h('span', { class: 'visually-hidden' }, ` ${group.name}`)),
          group.is_default ? null : h('button', { type: 'button', class: 'link', 'data-key': `delete-${group.name}`, onclick: () => deleteNodegroupDialog(group) }, 'Delete', h('span', { class: 'visually-hidden' }, ` ${group.name}`))))));
      replaceContent(nodegroupSection,
        h('div', { class: 'page-head' },
          h('h2', { id: 'nodegroups-title' }, 'Nodegroups'),
          h('button', { type: 'button', id: 'add-nodegroup', 'data-key': 'add-nodegroup', onclick: addNodegroupDialog }, 'Add nodegroup')),
        rows.length ? tableOf(['Name', 'Role', { label: 'Nodes', class: 'num' }, { label: 'Range', class: 'num wide-only' },
          { label: 'Flavor', class: 'wide-only' }, 'Status', { label: 'Actions' }], rows, 'Nodegroups') : h('p', { class: 'muted' }, 'No nodegroups.'));
    };

    const drawNodes = () => {
      const { nodes, checks } = nodeHealth(current.health_status_reason);
      const items = nodes.map((node) => h('li', { 'data-node': node.name },
        h('span', { class: 'mono' }, node.name),
        badge(node.ready === 'True' ? 'Ready' : 'NotReady', { class: `badge ${node.ready === 'True' ? 'ok' : 'bad'}` })));
      replaceContent(nodesSection,
        h('h2', { id: 'nodes-title' }, 'Nodes'),
        items.length ? h('ul', { class: 'nodes', id: 'nodes', 'aria-labelledby': 'nodes-title' }, items)
          : h('p', { class: 'muted' }, current.status && current.status.endsWith('_IN_PROGRESS') ? 'The nodes report once they are up.' : 'No node has reported its health yet.'),
        checks.length ? h('p', { class: 'muted' }, 'Checks: ', checks.map((check) => `${check.name}: ${check.value}`).join(', ')) : null);
    };

    const drawConnect = () => {
      const ready = Boolean(current.api_address) && !deleted;
      const kubernetes = template && template.coe === 'kubernetes';
      replaceContent(connectSection,
        h('h2', { id: 'connect-title' }, 'Connect to this cluster'),
        h('p', {}, kubernetes
          ? 'Download a kubeconfig with a client certificate made for you (its key is made in this browser and never leaves it).'
          : 'Download the Docker client files: a client certificate made for you (its key is made in this browser and never leaves it), the CA and an env.sh.'),
        h('div', { class: 'actions' },
          h('button', { type: 'button', class: 'primary', id: 'download-config', 'data-key': 'download-config', disabled: !ready, onclick: (event) => downloadBundle(event.currentTarget) },
            kubernetes ? 'Download kubeconfig' : 'Download client bundle'),
          ready ? null : h('span', { class: 'muted' }, 'Available once the cluster has an API address.')),
        h('div', { id: 'connect-result' }));
    };

    const reload = async () => {
      const [fresh, groups] = await Promise.all([
        api.get(`/clusters/${uuid}`),
        api.get(`/clusters/${uuid}/nodegroups`).catch(() => ({ nodegroups })),
      ]);
      if (!page.alive() || deleted) return;
      current = fresh;
      nodegroups = groups.nodegroups || [];
      drawAll();
    };
    let reloadTimer = null;
    const scheduleReload = () => {
      clearTimeout(reloadTimer);
      reloadTimer = setTimeout(() => reload().catch((error) => {
        if (error.status === 404) markDeleted();
      }), 250);
    };

    const markDeleted = () => {
      deleted = true;
      statusBadge.textContent = 'DELETED';
      statusBadge.className = 'badge';
      reasonEl.textContent = 'This cluster was deleted. Its events stay readable for a while.';
      for (const button of page.main.querySelectorAll('.cluster-actions button, #download-config, #add-nodegroup')) button.disabled = true;
    };

    const onEvent = (event) => {
      if (event.cluster_uuid !== uuid || seen.has(event.sequence)) return;
      seen.add(event.sequence);
      timeline.prepend(eventItem(event, true));
      while (timeline.children.length > TIMELINE_LENGTH) timeline.lastElementChild.remove();
      emptyTimeline.hidden = true;
      if (event.reason === 'Deleted') {
        markDeleted();
        announce(`Cluster ${current.name || uuid} was deleted.`, 'ok');
        return;
      }
      if (event.cluster) drawStatus(event.cluster);
      scheduleReload();
    };
    listen(page, onEvent);
    page.refresh = () => {
      reload().catch((error) => { if (error.status === 404) markDeleted(); });
      api.get(`/clusters/${uuid}/events?limit=50&sort_dir=desc`).then((fresh) => {
        for (const event of (fresh.events || []).reverse()) {
          if (!seen.has(event.sequence)) onEvent(event);
        }
      }).catch(() => {});
    };
    page.cleanup = () => clearTimeout(reloadTimer);

    // --- Actions ---
    const resizeDialog = (nodegroupName) => {
      const groupOptions = nodegroups.map((group) => [group.name, `${group.name} (${group.role}, ${group.node_count} now)`]);
      const preferred = nodegroupName || (nodegroups.find((group) => group.is_default && group.role !== 'master') || nodegroups[0] || {}).name;
      const countInput = input('node_count', { type: 'number', min: 0, inputmode: 'numeric', required: true });
      const groupSelect = select('nodegroup', groupOptions, preferred);
      const setCount = () => {
        const group = nodegroups.find((item) => item.name === groupSelect.value);
        if (group) countInput.value = String(group.node_count);
      };
      groupSelect.addEventListener('change', setCount);
      setCount();
      openDialog({
        title: `Resize ${current.name || uuid}`,
        fields: [field('Nodegroup', groupSelect), field('Node count', countInput)],
        confirm: 'Resize',
        submit: async (form) => {
          const count = integerOf(form, 'node_count');
          if (count === undefined) throw new FieldError('node_count', 'Enter the number of nodes.');
          await api.post(`/clusters/${uuid}/actions/resize`, { node_count: count, nodegroup: form.elements.nodegroup.value });
          announce(`Resizing ${form.elements.nodegroup.value} to ${count} nodes.`, 'ok');
          scheduleReload();
        },
      });
    };

    const upgradeDialog = async () => {
      let templates = [];
      try {
        templates = await listAll('/clustertemplates', 'clustertemplates');
      } catch (error) {
        announce(`The templates cannot be read: ${error.detail}`, 'error');
        return;
      }
      const candidates = templates.filter((item) => !template || item.coe === template.coe);
      openDialog({
        title: `Upgrade ${current.name || uuid}`,
        intro: 'The nodes are moved to the chosen template (its image and versions), a batch at a time.',
        fields: [
          field('New template', select('cluster_template', candidates.map((item) => [item.uuid, item.name || item.uuid]), current.cluster_template_id)),
          field('Nodes at a time', input('max_batch_size', { type: 'number', min: 1, value: '1', inputmode: 'numeric' })),
          field('Only this nodegroup', select('nodegroup', [['', 'All nodegroups'], ...nodegroups.map((group) => [group.name, group.name])], '')),
        ],
        confirm: 'Upgrade',
        submit: async (form) => {
          const body = { cluster_template: form.elements.cluster_template.value };
          const batch = integerOf(form, 'max_batch_size');
          if (batch !== undefined) body.max_batch_size = batch;
          if (form.elements.nodegroup.value) body.nodegroup = form.elements.nodegroup.value;
          await api.post(`/clusters/${uuid}/actions/upgrade`, body);
          announce('The upgrade started.', 'ok');
          scheduleReload();
        },
      });
    };

    const addNodegroupDialog = () => {
      openDialog({
        title: 'Add a nodegroup',
        fields: [
          field('Name', input('name', { required: true, autocomplete: 'off' })),
          field('Role', input('role', { value: 'worker', autocomplete: 'off' })),
          field('Nodes', input('node_count', { type: 'number', min: 0, value: '1', inputmode: 'numeric' })),
          field('Minimum nodes', input('min_node_count', { type: 'number', min: 0, inputmode: 'numeric' })),
          field('Maximum nodes', input('max_node_count', { type: 'number', min: 0, inputmode: 'numeric' })),
          field('Flavor', input('flavor_id', { autocomplete: 'off' }), "The cluster's when empty."),
          field('Image', input('image_id', { autocomplete: 'off' }), "The template's when empty."),
          field('Labels', h('textarea', { name: 'labels', rows: 2, spellcheck: 'false' }), 'key=value, one per line.'),
        ],
        confirm: 'Add nodegroup',
        submit: async (form) => {
          const body = {};
          for (const name of ['name', 'role', 'flavor_id', 'image_id']) {
            const value = textOf(form, name);
            if (value !== undefined) body[name] = value;
          }
          for (const name of ['node_count', 'min_node_count', 'max_node_count']) {
            const value = integerOf(form, name);
            if (value !== undefined) body[name] = value;
          }
          const labels = parseLabels(form.elements.labels.value);
          if (Object.keys(labels).length) body.labels = labels;
          await api.post(`/clusters/${uuid}/nodegroups`, body);
          announce(`Nodegroup ${body.name} is being added.`, 'ok');
          scheduleReload();
        },
      });
    };

    const deleteNodegroupDialog = (group) => {
      openDialog({
        title: `Delete nodegroup ${group.name}?`,
        intro: `Its ${group.node_count} node(s) are removed with everything running on them.`,
        confirm: 'Delete nodegroup',
        danger: true,
        submit: async () => {
          await api.delete(`/clusters/${uuid}/nodegroups/${enc(group.uuid)}`);
          announce(`Nodegroup ${group.name} is being deleted.`, 'ok');
          scheduleReload();
        },
      });
    };

    const rotateDialog = () => {
      openDialog({
        title: 'Rotate the certificate authority?',
        intro: 'The cluster gets a new CA and new node certificates. Every client certificate issued so far stops working: download the client files again afterwards.',
        confirm: 'Rotate CA',
        danger: true,
        submit: async () => {
          await api.patch(`/certificates/${uuid}`, { cluster_uuid: uuid });
          announce('The certificate authority is being rotated.', 'ok');
          scheduleReload();
        },
      });
    };

    const deleteDialog = () => {
      openDialog({
        title: `Delete cluster ${current.name || uuid}?`,
        intro: 'All its nodes and everything running on them are deleted. This cannot be undone.',
        confirm: 'Delete cluster',
        danger: true,
        submit: async () => {
          await api.delete(`/clusters/${uuid}`);
          announce(`Cluster ${current.name || uuid} is being deleted.`, 'ok');
          scheduleReload();
        },
      });
    };

    const downloadBundle = async (button) => {
      const result = document.getElementById('connect-result');
      button.disabled = true;
      result.replaceChildren(h('p', { class: 'muted' }, 'Making a key and a certificate…'));
      try {
        const made = await clientBundle(current, template);
        saveFile(made.filename, made.blob);
        result.replaceChildren(
          h('p', { role: 'status' }, `Downloaded ${made.filename}. Use it like this:`),
          h('pre', { class: 'commands', id: 'connect-commands' }, made.commands));
      } catch (error) {
        result.replaceChildren(h('p', { class: 'form-error', role: 'alert' }, error.detail || error.message));
      } finally {
        button.disabled = false;
      }
    };

    // Template and nodegroups (both only add detail: their absence is no error).
    const [templateReply, groupsReply] = await Promise.all([
      api.get(`/clustertemplates/${enc(cluster.cluster_template_id)}`).catch(() => null),
      api.get(`/clusters/${uuid}/nodegroups`).catch(() => ({ nodegroups: [] })),
    ]);
    if (!page.alive()) return;
    template = templateReply;
    nodegroups = groupsReply.nodegroups || [];
    drawAll();
    reasonEl.textContent = cluster.status_reason || '';
    show(page,
      h('p', {}, h('a', { href: '#/clusters' }, '← Clusters')),
      h('div', { class: 'page-head' },
        h('div', {},
          h('h1', {}, cluster.name || uuid),
          h('p', { class: 'actions' }, 'Status ', statusBadge, ' Health ', healthEl)),
        h('div', { class: 'actions cluster-actions' },
          h('button', { type: 'button', id: 'resize', onclick: () => resizeDialog() }, 'Resize'),
          h('button', { type: 'button', id: 'upgrade', onclick: upgradeDialog }, 'Upgrade'),
          h('button', { type: 'button', id: 'rotate-ca', onclick: rotateDialog }, 'Rotate CA'),
          h('button', { type: 'button', class: 'danger', id: 'delete-cluster', onclick: deleteDialog }, 'Delete'))),
      reasonEl,
      overview,
      h('section', { 'aria-labelledby': 'nodes-title' }, nodesSection),
      h('section', { 'aria-labelledby': 'nodegroups-title' }, nodegroupSection),
      h('section', { 'aria-labelledby': 'connect-title', class: 'panel' }, connectSection),
      h('section', { 'aria-labelledby': 'events-title' },
        h('h2', { id: 'events-title' }, 'Events'),
        emptyTimeline,
        timeline));
  }

  // --- "Connect to this cluster": key, CSR and bundle made in the browser ----------------
  // What `coe cluster config` writes, as one .tar: ca.pem, cert.pem, key.pem (PKCS#8) and
  // env.sh for Docker, or a kubeconfig for Kubernetes. The private key is made here with
  // WebCrypto (ECDSA P-256) and only the CSR is sent.
  async function clientBundle(cluster, template) {
    if (!template) throw new ApiError(0, 'The cluster\'s template cannot be read, so its kind is unknown.');
    const tls = !template.tls_disabled;
    const kubernetes = template.coe === 'kubernetes';
    const directory = (cluster.name || cluster.uuid).replace(/[^A-Za-z0-9_.-]/g, '_').slice(0, 64);
    const files = [];
    let ca = '';
    let certificate = '';
    let key = '';
    if (tls) {
      if (!window.crypto || !crypto.subtle) {
        throw new ApiError(0, 'This browser makes keys only on a secure page (HTTPS, or localhost). Use `coe cluster config` instead.');
      }
      const pair = await crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign', 'verify']);
      const csr = await certificateRequest(pair, [['2.5.4.3', 'admin'], ['2.5.4.10', 'system:masters']]);
      const [authority, signed] = await Promise.all([
        api.get(`/certificates/${cluster.uuid}`),
        api.post('/certificates', { cluster_uuid: cluster.uuid, csr }),
      ]);
      ca = `${authority.pem.trim()}\n`;
      certificate = `${signed.pem.trim()}\n`;
      key = pem('PRIVATE KEY', new Uint8Array(await crypto.subtle.exportKey('pkcs8', pair.privateKey)));
    }
    const address = cluster.api_address || '';
    let commands;
    const tarName = `${directory}.tar`;
    const unpack = `mkdir -p ~/.magnum && tar -xf ${tarName} -C ~/.magnum\ncd ~/.magnum/${directory} && . ./env.sh\n`;
    if (!kubernetes) {
      const env = tls
        ? `# Docker client settings for cluster ${cluster.name || ''} (${cluster.uuid}).\n# Source it from its own directory: cd <this directory> && . ./env.sh\nexport DOCKER_HOST=${address}\nexport DOCKER_CERT_PATH="$PWD"\nexport DOCKER_TLS_VERIFY=1\n`
        : `# Docker client settings for cluster ${cluster.name || ''} (${cluster.uuid}).\nexport DOCKER_HOST=${address}\n`;
      if (tls) files.push(['ca.pem', ca, 0o644], ['cert.pem', certificate, 0o644], ['key.pem', key, 0o600]);
      files.push(['env.sh', env, 0o644]);
      commands = `${unpack}docker node ls`;
    } else {
      const name = cluster.name || cluster.uuid;
      const user = tls
        ? `- name: admin\n  user:\n    client-certificate-data: ${base64(utf8(certificate))}\n    client-key-data: ${base64(utf8(key))}\n`
        : '- name: admin\n  user: {}\n';
      const authority = tls ? `    certificate-authority-data: ${base64(utf8(ca))}\n` : '';
      const kubeconfig = `apiVersion: v1\nclusters:\n- cluster:\n${authority}    server: ${address}\n  name: ${name}\ncontexts:\n- context:\n    cluster: ${name}\n    user: admin\n  name: default\ncurrent-context: default\nkind: Config\npreferences: {}\nusers:\n${user}`;
      files.push(['config', kubeconfig, 0o600]);
      if (tls) files.push(['ca.pem', ca, 0o644], ['cert.pem', certificate, 0o644], ['key.pem', key, 0o600]);
      files.push(['env.sh', `# kubectl settings for cluster ${name} (${cluster.uuid}).\n# Source it from its own directory: cd <this directory> && . ./env.sh\nexport KUBECONFIG="$PWD/config"\n`, 0o644]);
      commands = `${unpack}kubectl get nodes`;
    }
    const entries = [{ name: `${directory}/`, directory: true, mode: 0o755 }]
      .concat(files.map(([name, text, mode]) => ({ name: `${directory}/${name}`, data: utf8(text), mode })));
    return { filename: tarName, blob: tarArchive(entries), commands };
  }

  function saveFile(filename, blob) {
    const url = URL.createObjectURL(blob);
    const link = h('a', { href: url, download: filename, hidden: true });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60000);
  }

  const utf8 = (text) => new TextEncoder().encode(text);

  function concat(parts) {
    const arrays = parts.map((part) => (part instanceof Uint8Array ? part : Uint8Array.from(part)));
    const out = new Uint8Array(arrays.reduce((sum, part) => sum + part.length, 0));
    let at = 0;
    for (const part of arrays) {
      out.set(part, at);
      at += part.length;
    }
    return out;
  }

  function base64(bytes) {
    let binary = '';
    for (let at = 0; at < bytes.length; at += 0x8000) binary += String.fromCharCode(...bytes.subarray(at, at + 0x8000));
    return btoa(binary);
  }

  function pem(label, der) {
    const lines = base64(der).match(/.{1,64}/g) || [];
    return `-----BEGIN ${label}-----\n${lines.join('\n')}\n-----END ${label}-----\n`;
  }

  // DER, only what a PKCS#10 request needs.
  function derLength(length) {
    if (length < 0x80) return [length];
    const bytes = [];
    for (let rest = length; rest > 0; rest = Math.floor(rest / 256)) bytes.unshift(rest & 0xff);
    return [0x80 | bytes.length, ...bytes];
  }

  function der(tag, ...contents) {
    const body = concat(contents);
    return concat([[tag, ...derLength(body.length)], body]);
  }

  const sequence = (...contents) => der(0x30, ...contents);

  function objectIdentifier(dotted) {
    const arcs = dotted.split('.').map(Number);
    const bytes = [40 * arcs[0] + arcs[1]];
    for (const arc of arcs.slice(2)) {
      const groups = [arc & 0x7f];
      for (let rest = Math.floor(arc / 128); rest > 0; rest = Math.floor(rest / 128)) groups.unshift(0x80 | (rest & 0x7f));
      bytes.push(...groups);
    }
    return der(0x06, bytes);
  }

  function unsignedInteger(bytes) {
    let start = 0;
    while (start < bytes.length - 1 && bytes[start] === 0) start += 1;
    const trimmed = bytes.subarray(start);
    return der(0x02, trimmed[0] & 0x80 ? concat([[0], trimmed]) : trimmed);
  }

  async function certificateRequest(pair, subject) {
    const name = sequence(...subject.map(([type, value]) =>
      der(0x31, sequence(objectIdentifier(type), der(0x0c, utf8(value))))));
    const publicKey = new Uint8Array(await crypto.subtle.exportKey('spki', pair.publicKey));
    // version 0, subject, the key, no attributes ([0] empty).
    const info = sequence(der(0x02, [0]), name, publicKey, der(0xa0));
    // WebCrypto signs as r||s (32 bytes each); X.509 wants SEQUENCE { INTEGER r, INTEGER s }.
    const raw = new Uint8Array(await crypto.subtle.sign({ name: 'ECDSA', hash: 'SHA-256' }, pair.privateKey, info));
    const signature = sequence(unsignedInteger(raw.subarray(0, 32)), unsignedInteger(raw.subarray(32)));
    const ecdsaWithSha256 = sequence(objectIdentifier('1.2.840.10045.4.3.2'));
    return pem('CERTIFICATE REQUEST', sequence(info, ecdsaWithSha256, der(0x03, [0], signature)));
  }

  // A POSIX ustar archive: a 512-byte header per entry, contents padded to 512, two empty
  // blocks at the end.
  function tarArchive(entries) {
    const blocks = [];
    const modified = Math.floor(Date.now() / 1000);
    const put = (header, offset, length, text) => {
      const bytes = utf8(text);
      if (bytes.length > length) throw new Error(`"${text}" does not fit a tar header`);
      header.set(bytes, offset);
    };
    const octal = (header, offset, length, value) => put(header, offset, length, `${value.toString(8).padStart(length - 1, '0')}\0`);
    for (const entry of entries) {
      const data = entry.directory ? new Uint8Array(0) : entry.data;
      const header = new Uint8Array(512);
      put(header, 0, 100, entry.name);
      octal(header, 100, 8, entry.mode);
      octal(header, 108, 8, 0);
      octal(header, 116, 8, 0);
      octal(header, 124, 12, data.length);
      octal(header, 136, 12, modified);
      header.fill(0x20, 148, 156);
      header[156] = entry.directory ? 0x35 : 0x30;
      put(header, 257, 6, 'ustar\0');
      put(header, 263, 2, '00');
      const checksum = header.reduce((sum, byte) => sum + byte, 0);
      put(header, 148, 8, `${checksum.toString(8).padStart(6, '0')}\0 `);
      blocks.push(header, data, new Uint8Array((512 - (data.length % 512)) % 512));
    }
    blocks.push(new Uint8Array(1024));
    return new Blob(blocks, { type: 'application/x-tar' });
  }

  // --- Cluster templates -------------------------------------------------------------------
  async function renderTemplateList(page) {
    setTitle('Cluster templates');
    const body = h('div', {});
    const load = async () => {
      const templates = await listAll('/clustertemplates', 'clustertemplates');
      if (!page.alive()) return;
      if (!templates.length) {
        replaceContent(body, h('p', { class: 'empty' }, 'No cluster templates yet. ', h('a', { href: '#/templates/new' }, 'Create the first one'), '.'));
        return;
      }
      const rows = templates.map((template) => h('tr', { 'data-uuid': template.uuid },
        h('td', {}, h('a', { href: `#/templates/${template.uuid}` }, template.name || template.uuid)),
        h('td', {}, template.coe),
        h('td', { class: 'wide-only' }, template.image_id),
        h('td', { class: 'wide-only' }, [template.master_flavor_id, template.flavor_id].filter(Boolean).join(' / ') || '—'),
        h('td', { class: 'wide-only' }, template.public ? 'public' : (template.hidden ? 'hidden' : 'project')),
        h('td', {}, h('div', { class: 'actions' },
          h('a', { href: `#/clusters/new?template=${template.uuid}` }, 'Create cluster'),
          h('a', { href: `#/templates/new?from=${template.uuid}` }, 'Clone')))));
      replaceContent(body, tableOf(['Name', 'COE', { label: 'Image', class: 'wide-only' }, { label: 'Flavors (masters / workers)', class: 'wide-only' },
        { label: 'Visibility', class: 'wide-only' }, 'Actions'], rows, 'Cluster templates'));
    };
    page.refresh = () => load().catch(() => {});
    await load();
    show(page,
      h('div', { class: 'page-head' },
        h('h1', {}, 'Cluster templates'),
        h('a', { class: 'button primary', href: '#/templates/new', id: 'create-template' }, 'Create template')),
      body);
  }

  async function renderTemplateDetail(page, [ident]) {
    const template = await api.get(`/clustertemplates/${enc(ident)}`);
    if (!page.alive()) return;
    setTitle(template.name || template.uuid);
    const renameDialog = () => openDialog({
      title: `Rename ${template.name || template.uuid}`,
      fields: [field('New name', input('name', { value: template.name || '', required: true, autocomplete: 'off' }))],
      confirm: 'Rename',
      submit: async (form) => {
        const name = textOf(form, 'name');
        if (!name) throw new FieldError('name', 'Enter a name.');
        await api.patch(`/clustertemplates/${template.uuid}`, [{ op: 'replace', path: '/name', value: name }]);
        announce(`The template is now called ${name}.`, 'ok');
        route();
      },
    });
    const deleteDialog = () => openDialog({
      title: `Delete template ${template.name || template.uuid}?`,
      intro: 'Clusters made from it keep running; a template still in use cannot be deleted.',
      confirm: 'Delete template',
      danger: true,
      submit: async () => {
        await api.delete(`/clustertemplates/${template.uuid}`);
        announce(`Template ${template.name || template.uuid} deleted.`, 'ok');
        location.hash = '#/templates';
      },
    });
    const yes = (value) => (value ? 'yes' : 'no');
    show(page,
      h('p', {}, h('a', { href: '#/templates' }, '← Cluster templates')),
      h('div', { class: 'page-head' },
        h('h1', {}, template.name || template.uuid),
        h('div', { class: 'actions' },
          h('a', { class: 'button primary', href: `#/clusters/new?template=${template.uuid}` }, 'Create cluster'),
          h('a', { class: 'button', href: `#/templates/new?from=${template.uuid}`, id: 'clone-template' }, 'Clone'),
          h('button', { type: 'button', id: 'rename-template', onclick: renameDialog }, 'Rename'),
          h('button', { type: 'button', class: 'danger', id: 'delete-template', onclick: deleteDialog }, 'Delete'))),
      h('section', { class: 'panel' }, facts([
        ['UUID', h('span', { class: 'mono' }, template.uuid)],
        ['COE', template.coe],
        ['Image', template.image_id],
        ['Master flavor', template.master_flavor_id],
        ['Worker flavor', template.flavor_id],
        ['Keypair', template.keypair_id],
        ['External network', template.external_network_id],
        ['Fixed network / subnet', [template.fixed_network, template.fixed_subnet].filter(Boolean).join(' / ')],
        ['Network driver', template.network_driver],
        ['Volume driver', template.volume_driver],
        ['Docker volume size', template.docker_volume_size ? `${template.docker_volume_size} GB` : null],
        ['Docker storage driver', template.docker_storage_driver],
        ['DNS server', template.dns_nameserver],
        ['Load balancer for masters', yes(template.master_lb_enabled)],
        ['Floating IPs', yes(template.floating_ip_enabled)],
        ['TLS', template.tls_disabled ? 'disabled' : 'enabled'],
        ['Registry', yes(template.registry_enabled)],
        ['Server type', template.server_type],
        ['Distro', template.cluster_distro],
        ['Proxies', [template.http_proxy, template.https_proxy, template.no_proxy && `no: ${template.no_proxy}`].filter(Boolean).join(', ')],
        ['Labels', labelsText(template.labels)],
        ['Visibility', template.public ? 'public' : template.hidden ? 'hidden' : 'this project'],
        ['Tags', template.tags],
        ['Created', time(template.created_at)],
        ['Updated', time(template.updated_at)],
      ], 2)));
  }

  const NETWORK_DRIVERS = { 'swarm-mode': ['docker'], kubernetes: ['flannel', 'calico', 'cilium'] };
  const VOLUME_DRIVERS = { 'swarm-mode': [], kubernetes: ['cinder'] };

  async function renderTemplateForm(page, _params, query) {
    const fromId = query.get('from');
    const source = fromId ? await api.get(`/clustertemplates/${enc(fromId)}`) : null;
    if (!page.alive()) return;
    const title = source ? `Clone ${source.name || source.uuid}` : 'Create a cluster template';
    setTitle(title);
    const s = source || {};
    const value = (name) => (s[name] === null || s[name] === undefined ? '' : String(s[name]));
    const coe = select('coe', [['swarm-mode', 'Docker Swarm'], ['kubernetes', 'Kubernetes']], s.coe || 'swarm-mode', { required: true });
    const networkDriver = select('network_driver', [], '');
    const volumeDriver = select('volume_driver', [], '');
    const fillDrivers = () => {
      const keep = [networkDriver.value || value('network_driver'), volumeDriver.value || value('volume_driver')];
      networkDriver.replaceChildren(h('option', { value: '' }, 'Default'), ...NETWORK_DRIVERS[coe.value].map((item) => h('option', { value: item }, item)));
      volumeDriver.replaceChildren(h('option', { value: '' }, 'None'), ...VOLUME_DRIVERS[coe.value].map((item) => h('option', { value: item }, item)));
      networkDriver.value = NETWORK_DRIVERS[coe.value].includes(keep[0]) ? keep[0] : '';
      volumeDriver.value = VOLUME_DRIVERS[coe.value].includes(keep[1]) ? keep[1] : '';
    };
    coe.addEventListener('change', fillDrivers);
    fillDrivers();
    const labels = Object.entries(s.labels || {}).map(([key, item]) => `${key}=${item}`).join('\n');
    const form = h('form', { novalidate: true, id: 'template-form' },
      formError(),
      h('fieldset', {}, h('legend', {}, 'Basics'),
        h('div', { class: 'grid' },
          field('Name', input('name', { value: source ? `${source.name || 'template'}-copy` : '', autocomplete: 'off' })),
          field('Container orchestration', coe),
          field('Image', input('image_id', { value: value('image_id'), required: true, autocomplete: 'off' }), 'Name or ID of the node image (the local driver: local-node).'),
          field('Keypair', input('keypair_id', { value: value('keypair_id'), autocomplete: 'off' })))),
      h('fieldset', {}, h('legend', {}, 'Nodes'),
        h('div', { class: 'grid' },
          field('Master flavor', input('master_flavor_id', { value: value('master_flavor_id'), autocomplete: 'off' }), 'e.g. local.small'),
          field('Worker flavor', input('flavor_id', { value: value('flavor_id'), autocomplete: 'off' }), 'e.g. local.small'),
          field('Docker volume size (GB)', input('docker_volume_size', { type: 'number', min: 1, value: value('docker_volume_size'), inputmode: 'numeric' })),
          field('Docker storage driver', input('docker_storage_driver', { value: value('docker_storage_driver'), autocomplete: 'off' })))),
      h('fieldset', {}, h('legend', {}, 'Network'),
        h('div', { class: 'grid' },
          field('External network', input('external_network_id', { value: value('external_network_id'), autocomplete: 'off' }), 'e.g. local'),
          field('Network driver', networkDriver),
          field('Fixed network', input('fixed_network', { value: value('fixed_network'), autocomplete: 'off' })),
          field('Fixed subnet', input('fixed_subnet', { value: value('fixed_subnet'), autocomplete: 'off' })),
          field('DNS server', input('dns_nameserver', { value: value('dns_nameserver'), autocomplete: 'off' })),
          field('API server port', input('apiserver_port', { type: 'number', min: 1024, max: 65535, value: value('apiserver_port'), inputmode: 'numeric' }))),
        field('Load balancer in front of the masters', checkbox('master_lb_enabled', s.master_lb_enabled)),
        field('Floating IPs for the nodes', checkbox('floating_ip_enabled', source ? s.floating_ip_enabled : true))),
      field('Labels', h('textarea', { name: 'labels', rows: 4, spellcheck: 'false' }, labels), 'key=value, one per line (e.g. auto_healing_enabled=true).'),
      h('details', { class: 'advanced' }, h('summary', {}, 'Advanced'),
        h('fieldset', {}, h('legend', {}, 'Advanced'),
          h('div', { class: 'grid' },
            field('Volume driver', volumeDriver),
            field('Server type', select('server_type', [['vm', 'Virtual machines'], ['bm', 'Bare metal']], s.server_type || 'vm')),
            field('Distro', input('cluster_distro', { value: value('cluster_distro'), autocomplete: 'off' })),
            field('HTTP proxy', input('http_proxy', { value: value('http_proxy'), autocomplete: 'off' })),
            field('HTTPS proxy', input('https_proxy', { value: value('https_proxy'), autocomplete: 'off' })),
            field('No proxy', input('no_proxy', { value: value('no_proxy'), autocomplete: 'off' })),
            field('Insecure registry', input('insecure_registry', { value: value('insecure_registry'), autocomplete: 'off' })),
            field('Tags', input('tags', { value: value('tags'), autocomplete: 'off' })),
            field('Driver', input('driver', { value: value('driver'), autocomplete: 'off' }), 'Leave empty: the driver is chosen from the kind of cluster.')),
          field('TLS disabled', checkbox('tls_disabled', s.tls_disabled)),
          field('Registry enabled', checkbox('registry_enabled', s.registry_enabled)),
          isAdmin() ? field('Public (every project sees it)', checkbox('public', s.public)) : null,
          isAdmin() ? field('Hidden', checkbox('hidden', s.hidden)) : null)),
      h('div', { class: 'actions' },
        h('button', { type: 'submit', class: 'primary' }, source ? 'Create the copy' : 'Create template'),
        h('a', { class: 'button', href: '#/templates' }, 'Cancel')));
    onSubmit(form, async () => {
      const body = { coe: coe.value };
      for (const name of ['name', 'image_id', 'keypair_id', 'master_flavor_id', 'flavor_id', 'docker_storage_driver',
        'external_network_id', 'network_driver', 'fixed_network', 'fixed_subnet', 'dns_nameserver', 'volume_driver',
        'cluster_distro', 'http_proxy', 'https_proxy', 'no_proxy', 'insecure_registry', 'tags', 'driver']) {
        const text = textOf(form, name);
        if (text !== undefined) body[name] = text;
      }
      for (const name of ['docker_volume_size', 'apiserver_port']) {
        const number = integerOf(form, name);
        if (number !== undefined) body[name] = number;
      }
      if (form.elements.server_type.value !== 'vm') body.server_type = form.elements.server_type.value;
      // Booleans are sent when they differ from the API's defaults (public and hidden need
      // an admin, so a member's form never sends them).
      for (const [name, fallback] of [['master_lb_enabled', false], ['floating_ip_enabled', true], ['tls_disabled', false],
        ['registry_enabled', false], ['public', false], ['hidden', false]]) {
        const control = form.elements[name];
        if (control && control.checked !== fallback) body[name] = control.checked;
      }
      const parsed = parseLabels(form.elements.labels.value);
      if (Object.keys(parsed).length) body.labels = parsed;
      const created = await api.post('/clustertemplates', body);
      announce(`Template ${created.name || created.uuid} created.`, 'ok');
      location.hash = `#/templates/${created.uuid}`;
    });
    show(page, h('h1', {}, title), form);
  }

  // --- Admin: quotas, stats, conductors ----------------------------------------------------
  async function renderQuotas(page) {
    setTitle('Quotas and stats');
    const [stats, quotas] = await Promise.all([
      api.get('/stats'),
      listAll('/quotas?all_tenants=true', 'quotas'),
    ]);
    if (!page.alive()) return;
    const editDialog = (quota) => openDialog({
      title: `Cluster limit of ${quota.project_id}`,
      fields: [field('Clusters at most', input('hard_limit', { type: 'number', min: 0, value: String(quota.hard_limit), inputmode: 'numeric' }))],
      confirm: 'Save',
      submit: async (form) => {
        const limit = integerOf(form, 'hard_limit');
        if (limit === undefined) throw new FieldError('hard_limit', 'Enter a number.');
        await api.patch(`/quotas/${enc(quota.project_id)}/${enc(quota.resource)}`, { hard_limit: limit });
        announce(`The quota of ${quota.project_id} is now ${limit}.`, 'ok');
        route();
      },
    });
    const deleteDialog = (quota) => openDialog({
      title: `Delete the quota of ${quota.project_id}?`,
      intro: 'The project falls back to the default limit.',
      confirm: 'Delete quota',
      danger: true,
      submit: async () => {
        await api.delete(`/quotas/${enc(quota.project_id)}/${enc(quota.resource)}`);
        announce(`The quota of ${quota.project_id} is deleted.`, 'ok');
        route();
      },
    });
    const rows = quotas.map((quota) => h('tr', { 'data-project': quota.project_id },
      h('td', { class: 'mono' }, quota.project_id),
      h('td', {}, quota.resource),
      h('td', { class: 'num' }, quota.hard_limit),
      h('td', { class: 'wide-only' }, time(quota.updated_at || quota.created_at)),
      h('td', {}, h('div', { class: 'actions' },
        h('button', { type: 'button', class: 'link', onclick: () => editDialog(quota) }, 'Edit'),
        h('button', { type: 'button', class: 'link', onclick: () => deleteDialog(quota) }, 'Delete')))));
    const form = h('form', { novalidate: true, class: 'panel', id: 'quota-form' },
      h('h2', { id: 'new-quota' }, 'Set a project\'s limit'),
      formError(),
      h('div', { class: 'grid' },
        field('Project ID', input('project_id', { required: true, autocomplete: 'off' })),
        field('Clusters at most', input('hard_limit', { type: 'number', min: 0, required: true, inputmode: 'numeric' }))),
      h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary' }, 'Create quota')));
    onSubmit(form, async () => {
      const project = textOf(form, 'project_id');
      if (!project) throw new FieldError('project_id', 'Enter the project\'s ID.');
      const limit = integerOf(form, 'hard_limit');
      if (limit === undefined) throw new FieldError('hard_limit', 'Enter a number.');
      await api.post('/quotas', { project_id: project, resource: 'Cluster', hard_limit: limit });
      announce(`Project ${project} may have ${limit} clusters.`, 'ok');
      route();
    });
    show(page,
      h('h1', {}, 'Quotas and stats'),
      h('section', { class: 'panel', 'aria-labelledby': 'stats-title' },
        h('h2', { id: 'stats-title' }, 'In this cloud'),
        facts([['Clusters', h('span', { id: 'stats-clusters' }, stats.clusters)], ['Nodes', h('span', { id: 'stats-nodes' }, stats.nodes)]])),
      h('h2', {}, 'Quotas'),
      rows.length ? tableOf(['Project', 'Resource', { label: 'Limit', class: 'num' }, { label: 'Changed', class: 'wide-only' }, 'Actions'], rows, 'Quotas')
        : h('p', { class: 'empty' }, 'No project has a quota of its own: the default applies to all.'),
      form);
  }

  async function renderServices(page) {
    setTitle('Conductors');
    const load = async () => {
      const reply = await api.get('/mservices');
      return (reply.mservices || []).map((service) => h('tr', {},
        h('td', {}, service.host),
        h('td', { class: 'wide-only' }, service.binary),
        h('td', {}, badge(service.state)),
        h('td', { class: 'num wide-only' }, service.report_count),
        h('td', {}, service.disabled ? `disabled${service.disabled_reason ? `: ${service.disabled_reason}` : ''}` : 'enabled'),
        h('td', { class: 'wide-only' }, time(service.updated_at))));
    };
    const body = h('div', {});
    const draw = (rows) => replaceContent(body, rows.length
      ? tableOf(['Host', { label: 'Binary', class: 'wide-only' }, 'State', { label: 'Reports', class: 'num wide-only' }, 'Enabled', { label: 'Last report', class: 'wide-only' }], rows, 'Conductors')
      : h('p', { class: 'empty' }, 'No conductor has reported yet.'));
    draw(await load());
    page.refresh = () => load().then((rows) => { if (page.alive()) draw(rows); }).catch(() => {});
    const timer = setInterval(page.refresh, 10000);
    page.cleanup = () => clearInterval(timer);
    show(page, h('h1', {}, 'Conductors'), h('p', { class: 'muted' }, 'The conductor processes and whether they report (this page reads them again every 10 s).'), body);
  }

  // --- Start -------------------------------------------------------------------------------
  async function boot() {
    window.addEventListener('hashchange', route);
    // The skip link moves the focus to the content; as a hash it would be a route.
    document.querySelector('.skip-link').addEventListener('click', (event) => {
      event.preventDefault();
      document.getElementById('main').focus();
    });
    let session;
    try {
      session = await loadSession();
    } catch (error) {
      document.getElementById('main').replaceChildren(
        h('h1', {}, 'The dashboard cannot start'),
        h('p', { class: 'form-error', role: 'alert' }, error.detail || String(error)));
      return;
    }
    setSession(session);
    route();
  }

  boot();
})();
