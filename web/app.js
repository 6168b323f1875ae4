// The console shell: asks /ui/session who is signed in, shows a navigation of
// what their role may use, and renders views that call the /v1 API with the
// session cookie (state-changing calls carry X-CSRF-Token). The server
// enforces every permission; hiding what a role cannot use is only courtesy.
// All text is set with textContent: nothing from the API is parsed as HTML.

const $ = (id) => document.getElementById(id);

/** Views, in navigation order, with the permission each needs. */
const VIEWS = [
  { id: 'activity', label: 'Activity', permission: 'CALLS_READ', render: activity },
  { id: 'calls', label: 'Calls', permission: 'CALLS_READ', render: calls },
  { id: 'usage', label: 'Usage', permission: 'USAGE_READ', render: usage },
  { id: 'settings', label: 'Settings', permission: 'SETTINGS_READ', render: settings },
];

let session = null;
let allowed = [];
let stopView = () => {};

/** `el('li', {className: 'x'}, 'text', child)`. */
function el(tag, props = {}, ...children) {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children);
  return node;
}

function status(text, state = 'ok') {
  const s = $('status');
  s.textContent = text;
  s.dataset.state = state;
}

const can = (permission) => session.permissions.includes(permission);

/** A JSON API call; a dead session goes back to the sign-in form. */
async function api(path, { method = 'GET', body } = {}) {
  const headers = { Accept: 'application/json' };
  if (method !== 'GET') headers['X-CSRF-Token'] = session.csrf_token ?? '';
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const resp = await fetch(path, {
    method,
    headers,
    credentials: 'same-origin',
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (resp.status === 401) {
    location.assign('/ui/login');
    throw new Error('Your session has ended.');
  }
  const data = await resp.json().catch(() => null);
  if (!resp.ok) throw new Error(data?.error?.message ?? `The request failed (${resp.status}).`);
  return data;
}

const time = (ms) => el('time', { dateTime: new Date(ms).toISOString() }, new Date(ms).toLocaleTimeString());

async function main() {
  const resp = await fetch('/ui/session', { credentials: 'same-origin', headers: { Accept: 'application/json' } });
  if (resp.status === 401) {
    location.replace('/ui/login');
    return;
  }
  if (!resp.ok) {
    status('The console could not load your session. Reload the page.', 'error');
    return;
  }
  session = await resp.json();
  $('user-name').textContent = session.name;
  $('user-role').textContent = session.role;
  $('csrf').value = session.csrf_token ?? '';
  allowed = VIEWS.filter((v) => can(v.permission));
  $('nav').replaceChildren(
    ...allowed.map((v) => el('li', {}, el('a', { href: `#${v.id}`, id: `nav-${v.id}` }, v.label))),
  );
  addEventListener('hashchange', route);
  route();
}

function route() {
  const wanted = location.hash.slice(1);
  const view = allowed.find((v) => v.id === wanted) ?? allowed[0];
  stopView();
  stopView = () => {};
  for (const a of document.querySelectorAll('#nav a')) {
    if (a.id === `nav-${view?.id}`) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  $('view').replaceChildren();
  if (!view) {
    $('title').textContent = 'Nothing to show';
    status('Your role has no views in this console.', 'error');
    return;
  }
  $('title').textContent = view.label;
  document.title = `${view.label} · callstream`;
  const refused = wanted && wanted !== view.id && VIEWS.some((v) => v.id === wanted);
  status(refused ? 'That page is not available to your role.' : '', refused ? 'error' : 'ok');
  view
    .render($('view'))
    .then((stop) => {
      if (stop) stopView = stop;
    })
    .catch((e) => status(e.message, 'error'));
}

/** Live tenant events (GET /v1/events); EventSource resumes by itself. */
async function activity(root) {
  const list = el('ol', { className: 'events', id: 'events' });
  list.setAttribute('aria-live', 'polite');
  list.setAttribute('aria-label', 'Events, newest first');
  const empty = el('p', { className: 'empty' }, 'No events yet. Calls, recordings and transcripts appear here as they happen.');
  root.append(empty, list);
  const source = new EventSource('/v1/events');
  source.onopen = () => {
    root.dataset.state = 'live';
  };
  source.onerror = () => {
    root.dataset.state = 'reconnecting';
  };
  source.onmessage = (m) => {
    const e = JSON.parse(m.data);
    empty.hidden = true;
    const what = e.call_id ? `call ${e.call_id}` : '';
    const extra = e.data?.status ? ` (${e.data.status})` : '';
    const item = el('li', {}, time(e.created_at), el('span', { className: 'event-type' }, e.type), el('span', { className: 'mono' }, what + extra));
    item.dataset.type = e.type;
    list.prepend(item);
  };
  return () => source.close();
}

async function calls(root) {
  const page = await api('/v1/calls?limit=25');
  if (!page.calls.length) {
    root.append(el('p', { className: 'empty' }, 'No calls yet.'));
    return;
  }
  const head = el('tr', {}, ...['Started', 'Direction', 'Status', 'Duration'].map((h) => el('th', { scope: 'col' }, h)));
  const rows = page.calls.map((c) =>
    el(
      'tr',
      {},
      el('td', {}, time(c.created_at)),
      el('td', {}, c.direction),
      el('td', {}, c.status),
      el('td', {}, c.duration_ms == null ? '—' : `${Math.round(c.duration_ms / 1000)} s`),
    ),
  );
  root.append(el('table', {}, el('thead', {}, head), el('tbody', {}, ...rows)));
}

async function usage(root) {
  const u = await api('/v1/usage');
  const rows = [
    ['Inbound calls', `${u.calls.inbound.count} (${u.calls.inbound.minutes} min)`],
    ['Outbound calls', `${u.calls.outbound.count} (${u.calls.outbound.minutes} min)`],
    ['Recorded minutes', u.recorded_minutes],
    ['Transcribed minutes', u.transcribed_minutes],
    ['Storage', `${u.storage_bytes} bytes`],
    ['Peak concurrent streams', u.concurrent_streams_peak],
  ];
  root.append(
    el('p', { className: 'empty' }, `From ${u.from} to ${u.to}`),
    el('table', {}, el('tbody', {}, ...rows.map(([k, v]) => el('tr', {}, el('th', { scope: 'row' }, k), el('td', {}, String(v)))))),
  );
}

/** Telephony settings; admins may change the switches (PUT with CSRF). */
async function settings(root) {
  const doc = await api('/v1/settings/telephony');
  const manage = can('SETTINGS_MANAGE');
  const switches = [
    ['record_calls', 'Record calls'],
    ['transcribe_live', 'Caption calls live'],
    ['pii_redaction', 'Redact personal data from transcripts'],
  ];
  const form = el('form', { className: 'settings', id: 'settings-form' });
  for (const [key, label] of switches) {
    const box = el('input', { type: 'checkbox', id: `setting-${key}`, name: key, checked: !!doc[key], disabled: !manage });
    form.append(el('label', { htmlFor: box.id }, box, label));
  }
  if (manage) {
    form.append(el('div', {}, el('button', { type: 'submit' }, 'Save settings')));
    form.onsubmit = async (ev) => {
      ev.preventDefault();
      for (const [key] of switches) doc[key] = form.elements[key].checked;
      try {
        Object.assign(doc, await api('/v1/settings/telephony', { method: 'PUT', body: doc }));
        status('Settings saved.');
      } catch (e) {
        status(e.message, 'error');
      }
    };
  } else {
    form.append(el('p', { className: 'empty' }, 'Only an administrator can change these.'));
  }
  root.append(form);
}

main().catch((e) => status(e.message, 'error'));
