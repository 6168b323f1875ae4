// Live captions of one call (/ui/calls/{id}) from the captions WebSocket.
// The API key comes from the URL fragment (#access_token=KEY) or the form,
// and is kept in sessionStorage. Transcript text only ever goes through
// textContent.
'use strict';

const KEY = 'callstream.apiKey';
const LABELS = { caller: 'Caller', agent: 'Agent' };
const callId = decodeURIComponent(location.pathname.split('/').pop());
const list = document.getElementById('captions');
const statusLine = document.getElementById('status');
const form = document.getElementById('key-form');

const partials = new Map(); // track -> <li> of the utterance in progress
const finalsShown = new Set(); // history is sent again on every reconnect
let socket = null;
let ended = false;
let failures = 0;
let retryTimer = 0;

function setStatus(state, text) {
  statusLine.dataset.state = state;
  statusLine.textContent = text;
}

function mmss(ms) {
  const s = Math.floor(ms / 1000);
  return `${String(Math.floor(s / 60)).padStart(2, '0')}:${String(s % 60).padStart(2, '0')}`;
}

function takeKeyFromFragment() {
  const key = new URLSearchParams(location.hash.slice(1)).get('access_token');
  if (!key) return false;
  sessionStorage.setItem(KEY, key);
  // Out of the address bar, history and anything copied from them.
  history.replaceState(null, '', location.pathname + location.search);
  return true;
}

function askForKey(message) {
  setStatus('error', message);
  form.hidden = false;
  form.elements.key.focus();
}

form.addEventListener('submit', (event) => {
  event.preventDefault();
  const key = form.elements.key.value.trim();
  if (!key) return;
  sessionStorage.setItem(KEY, key);
  form.reset();
  form.hidden = true;
  connect();
});

// A new <li>, placed in time order among the captions shown.
function newCaption(msg) {
  const li = document.createElement('li');
  const who = document.createElement('span');
  who.className = 'who';
  who.textContent = LABELS[msg.track];
  const time = document.createElement('time');
  time.className = 'time';
  const text = document.createElement('p');
  text.className = 'text';
  li.append(who, time, text);
  const later = [...list.children].find((el) => Number(el.dataset.start) > msg.start_ms);
  list.insertBefore(li, later ?? null);
  return li;
}

function render(li, msg, kind) {
  li.className = `caption ${msg.track} ${kind}`;
  li.dataset.start = msg.start_ms;
  const time = li.querySelector('.time');
  time.textContent = mmss(msg.start_ms);
  time.dateTime = `PT${(msg.start_ms / 1000).toFixed(1)}S`;
  li.querySelector('.text').textContent = msg.text;
  // Screen readers announce finals, not every tentative revision.
  li.toggleAttribute('aria-hidden', kind === 'partial');
}

function dropPartials() {
  for (const li of partials.values()) li.remove();
  partials.clear();
}

function show(msg) {
  if (msg.type === 'end') {
    ended = true;
    dropPartials();
    setStatus('ended', 'Call ended');
    return;
  }
  if (!Object.hasOwn(LABELS, msg.track) || typeof msg.text !== 'string') return;
  const follow = innerHeight + scrollY >= document.body.scrollHeight - 40;
  if (msg.type === 'partial') {
    const li = partials.get(msg.track) ?? newCaption(msg);
    partials.set(msg.track, li);
    render(li, msg, 'partial');
  } else if (msg.type === 'final') {
    const id = `${msg.track} ${msg.start_ms} ${msg.end_ms} ${msg.text}`;
    if (finalsShown.has(id)) return;
    finalsShown.add(id);
    // The final replaces the partial of its utterance (never a later one's).
    let li = partials.get(msg.track);
    if (li && Number(li.dataset.start) <= msg.start_ms) partials.delete(msg.track);
    else li = newCaption(msg);
    render(li, msg, 'final');
  } else {
    return;
  }
  if (follow) scrollTo(0, document.body.scrollHeight);
}

function connect() {
  clearTimeout(retryTimer);
  const key = sessionStorage.getItem(KEY);
  if (!key) return askForKey('Enter an API key to watch this call.');
  setStatus('connecting', 'Connecting…');
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
  const ws = new WebSocket(
    `${scheme}://${location.host}/v1/calls/${encodeURIComponent(callId)}/captions` +
      `?access_token=${encodeURIComponent(key)}`,
  );
  socket = ws;
  let opened = false;
  ws.onopen = () => {
    opened = true;
    failures = 0;
    dropPartials(); // their finals, if any, come with the history
    setStatus('live', 'Live');
  };
  ws.onmessage = (event) => {
    let msg;
    try {
      msg = JSON.parse(event.data);
    } catch {
      return;
    }
    if (msg && typeof msg === 'object') show(msg);
  };
  ws.onclose = (event) => {
    if (socket !== ws || ended) return;
    socket = null;
    if (event.code === 4001) {
      setStatus('lagged', 'Fell behind; reconnecting…');
      retryTimer = setTimeout(connect, 500);
    } else if (!opened) {
      diagnose(key);
    } else {
      retry('Disconnected');
    }
  };
}

// A refused upgrade looks the same to every WebSocket error: ask the REST
// API (with the key in a header) what is wrong.
async function diagnose(key) {
  let status = 0;
  try {
    const resp = await fetch(`/v1/calls/${encodeURIComponent(callId)}`, {
      headers: { Authorization: `Bearer ${key}` },
      cache: 'no-store',
    });
    status = resp.status;
  } catch {
    // offline: retry below
  }
  if (status === 401) {
    sessionStorage.removeItem(KEY);
    askForKey('That API key was rejected. Enter a valid one.');
  } else if (status === 404) {
    setStatus('error', 'No such call for this API key.');
  } else {
    retry('Cannot connect');
  }
}

function retry(why) {
  failures += 1;
  const seconds = Math.min(2 ** (failures - 1), 15);
  setStatus('offline', `${why}; retrying in ${seconds} s…`);
  retryTimer = setTimeout(connect, seconds * 1000);
}

// A link with another key, opened in this tab, changes only the fragment.
addEventListener('hashchange', () => {
  if (!takeKeyFromFragment()) return;
  socket?.close();
  socket = null;
  ended = false;
  form.hidden = true;
  connect();
});

document.getElementById('call-id').textContent = callId;
takeKeyFromFragment();
connect();
