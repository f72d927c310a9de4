// The entry point: owns the tabs (and the URL hash naming the open one, so
// a reload or a link keeps it), the refresh button and auto refresh, and
// the admin-secret dialog. What is inside each tab lives in form.js and
// lists.js.

import { forgetSecret, hasSecret, onSecretNeeded } from './api.js';
import { scheduleForm } from './form.js';
import { invocationLogs, pendingEvents, processedEvents } from './lists.js';
import { localText, zoneLabel } from './time.js';

const AUTO_REFRESH_MS = 5000;
const $ = (id) => document.getElementById(id);

const views = {
  schedule: scheduleForm($('panel-schedule'), { onScheduled: () => views.pending.refresh() }),
  pending: pendingEvents($('panel-pending')),
  processed: processedEvents($('panel-processed')),
  logs: invocationLogs($('panel-logs')),
};
let current = 'schedule';

for (const el of document.querySelectorAll('.zone-name')) el.textContent = zoneLabel();

// Tabs, following the WAI-ARIA tabs pattern: one tab in the Tab order,
// arrow keys move between tabs.
const tabs = [...document.querySelectorAll('[role=tab]')];

function show(name, arg) {
  current = name;
  for (const tab of tabs) {
    const selected = tab.dataset.tab === name;
    tab.setAttribute('aria-selected', String(selected));
    tab.tabIndex = selected ? 0 : -1;
    $(tab.getAttribute('aria-controls')).hidden = !selected;
  }
  $('refresh-bar').hidden = !views[name].refresh;
  if (name === 'logs') views.logs.show(arg ?? null);
  refresh();
}

/** '#logs/<event id>' → show('logs', id); anything unknown → the form. */
function route() {
  const [name, arg] = location.hash.slice(1).split('/');
  let id;
  try {
    id = arg ? decodeURIComponent(arg) : undefined;
  } catch {
    id = arg; // not percent-encoded after all: chime will say it is no id
  }
  show(Object.hasOwn(views, name) ? name : 'schedule', id);
}

function go(name) {
  if (location.hash === `#${name}`) route();
  else location.hash = `#${name}`;
}

for (const tab of tabs) {
  tab.addEventListener('click', () => go(tab.dataset.tab));
  tab.addEventListener('keydown', (e) => {
    const i = tabs.indexOf(tab);
    const to = { ArrowRight: i + 1, ArrowLeft: i - 1, Home: 0, End: tabs.length - 1 }[e.key];
    if (to === undefined) return;
    e.preventDefault();
    const target = tabs[(to + tabs.length) % tabs.length];
    target.focus();
    go(target.dataset.tab);
  });
}
window.addEventListener('hashchange', route);

// Refresh: the open list only, by hand or every few seconds while the tab
// is visible. Nothing reloads the page.
async function refresh() {
  const view = views[current];
  if (!view.refresh) return;
  $('refresh').setAttribute('aria-busy', 'true');
  await view.refresh();
  $('refresh').removeAttribute('aria-busy');
  $('updated').textContent = `Updated ${localText(new Date()).slice(11)}`;
}
$('refresh').addEventListener('click', refresh);
setInterval(() => {
  if ($('auto-refresh').checked && !document.hidden) refresh();
}, AUTO_REFRESH_MS);
document.addEventListener('visibilitychange', () => {
  if (!document.hidden && $('auto-refresh').checked) refresh();
});

// The admin secret: asked for in a dialog when chime answers 401.
const dialog = $('secret-dialog');
onSecretNeeded((refused) => new Promise((resolve) => {
  $('secret-message').textContent = refused
    ? 'chime refused that admin secret. Enter the right one.'
    : 'This chime asks for its admin secret.';
  $('secret-input').value = '';
  dialog.returnValue = '';
  dialog.addEventListener('close', () => {
    resolve(dialog.returnValue === 'ok' ? $('secret-input').value : null);
  }, { once: true });
  dialog.showModal();
}));
$('secret-cancel').addEventListener('click', () => dialog.close(''));

function showForget() {
  $('forget-secret').hidden = !hasSecret();
}
$('forget-secret').addEventListener('click', () => {
  forgetSecret();
  refresh();
});
window.addEventListener('chime-secret', showForget);
showForget();

route();
