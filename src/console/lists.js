// Owns the three list tabs: Pending and Processed events (tables with
// paging and cancel) and Invocation logs (entries that open onto the request
// sent and the response received). Each list keeps its own page and redraws
// from chime on refresh(), keeping focus and opened entries across redraws.

import { ApiError, metadata, requestSecret } from './api.js';
import { h, pretty } from './dom.js';
import { relative, timeEl, zone } from './time.js';

const PAGE_SIZES = [10, 25, 50, 100];

/**
 * The part every list shares: paging, loading, errors, the empty state.
 * `load(offset, limit)` resolves to {rows, count}; `render(rows)` and
 * `empty()` give the nodes to show.
 */
function pagedList(panel, { name, load, render, empty }) {
  let page = 0;
  let limit = PAGE_SIZES[0];
  let running = null;
  let again = false; // asked to refresh while loading: load once more after
  let shownProblem = '';

  const notice = h('p', { class: 'notice', role: 'status' });
  const problem = h('div', { class: 'problem', role: 'alert', hidden: true });
  const body = h('div', { class: 'list-body' });
  const size = h('select', {}, PAGE_SIZES.map((n) => h('option', { value: n }, String(n))));
  const range = h('span', { class: 'range' });
  const prev = h('button', { type: 'button' }, 'Previous');
  const next = h('button', { type: 'button' }, 'Next');
  const pager = h('nav', { class: 'pager', 'aria-label': `${name}, pages`, hidden: true },
    h('label', {}, 'Per page ', size), range, prev, next);
  size.addEventListener('change', () => {
    limit = Number(size.value);
    page = 0;
    refresh();
  });
  prev.addEventListener('click', () => {
    page = Math.max(0, page - 1);
    refresh();
  });
  next.addEventListener('click', () => {
    page += 1;
    refresh();
  });
  panel.append(notice, problem, body, pager);

  async function loadAndDraw() {
    try {
      let { rows, count } = await load(page * limit, limit);
      const last = Math.max(0, Math.ceil(count / limit) - 1);
      if (page > last) {
        // The page emptied (events were processed or cancelled): show the last one.
        page = last;
        ({ rows, count } = await load(page * limit, limit));
      }
      showProblem(null);
      draw(rows, count);
    } catch (e) {
      showProblem(e);
    }
  }

  function refresh() {
    if (running) {
      again = true;
      return running;
    }
    running = (async () => {
      do {
        again = false;
        await loadAndDraw();
      } while (again);
    })().finally(() => {
      running = null;
    });
    return running;
  }

  function draw(rows, count) {
    const focused = document.activeElement;
    const key = body.contains(focused) ? focused.dataset.key : undefined;
    body.replaceChildren(count === 0 ? empty() : render(rows));
    if (key) body.querySelector(`[data-key="${CSS.escape(key)}"]`)?.focus();
    pager.hidden = count === 0;
    range.textContent = `${page * limit + 1}–${page * limit + rows.length} of ${count}`;
    prev.disabled = page === 0;
    next.disabled = (page + 1) * limit >= count;
  }

  function showProblem(e) {
    let text = '';
    if (e instanceof ApiError && e.status === 401) text = 'secret';
    else if (e) text = `Could not load ${name.toLowerCase()}: ${e.message}`;
    if (text === shownProblem) return; // unchanged: do not announce it again
    shownProblem = text;
    problem.hidden = !text;
    if (text === 'secret') {
      const ask = h('button', { type: 'button' }, 'Enter admin secret');
      ask.addEventListener('click', async () => {
        if (await requestSecret()) refresh();
      });
      problem.replaceChildren('This chime asks for its admin secret. ', ask);
    } else {
      problem.replaceChildren(text);
    }
  }

  return {
    refresh,
    reset() {
      page = 0;
    },
    /** A line of feedback above the list (e.g. after a cancel). */
    say(text) {
      notice.textContent = text;
    },
  };
}

/** What an empty list says, and what to do about it. */
function emptyState(title, advice, action) {
  return h('div', { class: 'empty' }, h('p', { class: 'empty-title' }, title), h('p', {}, advice), action);
}

const short = (id) => id.slice(0, 8);

function badge(status) {
  return h('span', { class: `badge ${status}` }, status);
}

/** Events, oldest scheduled first, or newest first counted from the end. */
async function loadEvents(statuses, offset, limit, newestFirst) {
  const args = { type: 'one_off', status: statuses, get_rows_count: true };
  if (!newestFirst) {
    const answer = await metadata('get_scheduled_events', { ...args, offset, limit });
    return { rows: answer.events, count: answer.count };
  }
  // chime lists by scheduled time, oldest first: the newest page is the
  // one counted back from the end.
  const { count } = await metadata('get_scheduled_events', { ...args, limit: 0 });
  const end = count - offset;
  if (end <= 0) return { rows: [], count };
  const start = Math.max(0, end - limit);
  const answer = await metadata('get_scheduled_events', { ...args, offset: start, limit: end - start });
  return { rows: answer.events.reverse(), count: answer.count };
}

const COLUMNS = {
  scheduled: {
    title: `Scheduled (${zone})`,
    cell: (ev) => [timeEl(ev.scheduled_time), h('span', { class: 'sub' }, relative(new Date(ev.scheduled_time)))],
  },
  webhook: { title: 'Webhook', class: 'url', cell: (ev) => h('span', { title: ev.webhook_conf }, ev.webhook_conf) },
  status: {
    title: 'Status',
    cell: (ev) => [
      badge(ev.status),
      ev.next_retry_at && h('span', { class: 'sub' }, `retry ${relative(new Date(ev.next_retry_at))}`),
    ],
  },
  tries: { title: 'Tries', class: 'num', cell: (ev) => String(ev.tries) },
  created: { title: `Created (${zone})`, class: 'wide', cell: (ev) => timeEl(ev.created_at) },
  comment: { title: 'Comment', class: 'wide comment', cell: (ev) => ev.comment ?? '' },
  id: { title: 'Event ID', cell: (ev) => h('code', { title: ev.id }, short(ev.id)) },
};

function eventTable(caption, events, columns, actions) {
  return h('div', { class: 'table-wrap' }, h('table', {},
    h('caption', { class: 'sr-only' }, caption),
    h('thead', {}, h('tr', {},
      columns.map((c) => h('th', { scope: 'col', class: c.class }, c.title)),
      h('th', { scope: 'col' }, h('span', { class: 'sr-only' }, 'Actions')))),
    h('tbody', {}, events.map((ev) => h('tr', { dataset: { eventId: ev.id, status: ev.status } },
      columns.map((c) => h('td', { class: c.class }, c.cell(ev))),
      h('td', { class: 'row-actions' }, actions(ev)))))));
}

function logsLink(ev) {
  return h('a', {
    href: `#logs/${ev.id}`,
    class: 'button',
    dataset: { key: `logs:${ev.id}` },
    'aria-label': `Invocation logs of event ${short(ev.id)}`,
  }, 'Logs');
}

/** Pending events: scheduled or locked, soonest first, each with a cancel button. */
export function pendingEvents(panel) {
  const list = pagedList(panel, {
    name: 'Pending events',
    load: (offset, limit) => loadEvents(['scheduled', 'locked'], offset, limit, false),
    render: (events) => eventTable('Pending events, soonest first', events,
      [COLUMNS.scheduled, COLUMNS.webhook, COLUMNS.status, COLUMNS.tries, COLUMNS.comment, COLUMNS.id],
      (ev) => [logsLink(ev), h('button', {
        type: 'button',
        class: 'danger',
        dataset: { key: `cancel:${ev.id}` },
        'aria-label': `Cancel event ${short(ev.id)}`,
        onclick: () => cancel(ev),
      }, 'Cancel')]),
    empty: () => emptyState('No pending events.',
      'Schedule one in the “Schedule an event” tab, or with create_scheduled_event on /v1/metadata.',
      h('a', { href: '#schedule', class: 'button primary' }, 'Schedule an event')),
  });

  async function cancel(ev) {
    if (!window.confirm(`Cancel event ${ev.id}?\n\nIt will not be sent to ${ev.webhook_conf}.`)) return;
    try {
      await metadata('delete_scheduled_event', { type: 'one_off', event_id: ev.id });
      list.say(`Event ${short(ev.id)} cancelled.`);
    } catch (e) {
      list.say(`Could not cancel event ${short(ev.id)}: ${e.message}`);
    }
    await list.refresh();
  }

  return list;
}

/** Processed events: delivered, error or dead, latest first. */
export function processedEvents(panel) {
  return pagedList(panel, {
    name: 'Processed events',
    load: (offset, limit) => loadEvents(['delivered', 'error', 'dead'], offset, limit, true),
    render: (events) => eventTable('Processed events, latest first', events,
      [COLUMNS.scheduled, COLUMNS.webhook, COLUMNS.status, COLUMNS.tries, COLUMNS.created, COLUMNS.comment, COLUMNS.id],
      (ev) => logsLink(ev)),
    empty: () => emptyState('No processed events yet.',
      'Events show here once they are delivered, have failed every try (error), or were too late to send (dead). Pending events are in the “Pending events” tab.'),
  });
}

/** Invocation logs, newest first: all of them, or one event's. */
export function invocationLogs(panel) {
  let eventId = null;
  const opened = new Set(); // entries the user opened stay open across redraws
  const input = document.getElementById('logs-event');
  const fieldError = document.getElementById('logs-event-error');

  function setFieldError(message) {
    fieldError.hidden = !message;
    fieldError.textContent = message ?? '';
    if (message) input.setAttribute('aria-invalid', 'true');
    else input.removeAttribute('aria-invalid');
  }

  const list = pagedList(panel, {
    name: 'Invocation logs',
    async load(offset, limit) {
      const args = { type: 'one_off', offset, limit, get_rows_count: true };
      if (eventId) args.event_id = eventId;
      try {
        const answer = await metadata('get_scheduled_event_invocations', args);
        setFieldError(null);
        return { rows: answer.invocations, count: answer.count };
      } catch (e) {
        if (!(e instanceof ApiError) || !e.path.endsWith('.event_id')) throw e;
        setFieldError(e.message); // not an id, or no such event
        return { rows: [], count: 0 };
      }
    },
    render: (invocations) => h('ol', { class: 'invocations' }, invocations.map(entry)),
    empty: () => emptyState(
      eventId ? `No invocations of event ${eventId}.` : 'No invocations yet.',
      'Every try to call a webhook is logged here, with the request sent and the response received. ' +
        'A pending event has none until its time comes; a dead event has none at all.'),
  });

  function entry(inv) {
    const ok = inv.status >= 200 && inv.status < 300;
    // A failure with no HTTP answer says why; an answer's body is shown below.
    const failure = inv.response?.type === 'client_error' && inv.response.data?.status === undefined
      ? inv.response.data?.message : null;
    const details = h('details', { class: 'invocation', dataset: { invocationId: inv.id, eventId: inv.event_id }, open: opened.has(inv.id) },
      h('summary', { dataset: { key: `inv:${inv.id}` } },
        timeEl(inv.created_at),
        h('span', { class: `badge ${ok ? 'delivered' : 'error'}` }, inv.status === null ? 'no answer' : String(inv.status)),
        h('span', { class: 'sub' }, 'event ', h('code', {}, short(inv.event_id))),
        failure && h('span', { class: 'sub failure' }, failure)),
      h('div', { class: 'invocation-body' },
        h('p', {}, 'Event ', h('code', {}, inv.event_id), ' · attempt ', h('code', {}, inv.id),
          !eventId && [' · ', h('a', { href: `#logs/${inv.event_id}` }, 'only this event')]),
        h('div', { class: 'exchange' }, requestView(inv.request), responseView(inv.response))));
    details.addEventListener('toggle', () => {
      if (details.open) opened.add(inv.id);
      else opened.delete(inv.id);
    });
    return h('li', {}, details);
  }

  document.getElementById('logs-filter').addEventListener('submit', (e) => {
    e.preventDefault();
    const id = input.value.trim();
    location.hash = id ? `#logs/${encodeURIComponent(id)}` : '#logs';
  });
  document.getElementById('logs-all').addEventListener('click', () => {
    location.hash = '#logs';
  });

  return {
    refresh: list.refresh,
    /** Shows one event's invocations, or all when `id` is null. */
    show(id) {
      if (id !== eventId) {
        eventId = id;
        list.reset();
        setFieldError(null);
      }
      input.value = id ?? '';
    },
  };
}

function headerTable(caption, headers) {
  if (!headers?.length) return h('p', { class: 'muted' }, 'No headers.');
  return h('table', { class: 'headers' }, h('caption', { class: 'sr-only' }, caption),
    h('tbody', {}, headers.map(({ name, value, value_from_env: fromEnv }) => h('tr', {}, h('th', { scope: 'row' }, name),
      h('td', {}, fromEnv === undefined ? value : `from env ${fromEnv}`)))));
}

function requestView(request) {
  return h('section', { class: 'half' },
    h('h3', {}, 'Request'),
    headerTable('Request headers', request?.headers),
    h('pre', { tabindex: 0, 'aria-label': 'Request body' }, pretty(request?.payload ?? null)));
}

function responseView(response) {
  const data = response?.data ?? {};
  // An HTTP answer that is not a 2xx is a client_error whose message is the
  // body (Hasura's shape), with the status and headers beside it.
  const answered = response?.type === 'webhook_response' || data.status !== undefined;
  if (!answered) {
    return h('section', { class: 'half' },
      h('h3', {}, 'Response'),
      h('p', { class: 'failure' }, `No answer: ${data.message ?? 'unknown error'}`));
  }
  return h('section', { class: 'half' },
    h('h3', {}, 'Response ', h('span', { class: `badge ${data.status >= 200 && data.status < 300 ? 'delivered' : 'error'}` }, String(data.status))),
    headerTable('Response headers', data.headers),
    h('pre', { tabindex: 0, 'aria-label': 'Response body' },
      (data.body ?? data.message) ? pretty(data.body ?? data.message) : '(empty body)'),
    data.truncated && h('p', { class: 'muted' }, 'The answer (headers and body) was cut at the size chime keeps.'));
}
