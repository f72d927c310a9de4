// Owns the "Schedule an event" form: the time shortcuts, the header rows,
// checking the fields, building create_scheduled_event's args, and showing
// every error (the page's own checks and chime's answers alike) next to
// the field it concerns, found from the error's JSON path.

import { metadata } from './api.js';
import { h } from './dom.js';
import { fromInputValue, localText, relative, toInputValue, zoneLabel } from './time.js';

const RETRY_KEYS = ['num_retries', 'retry_interval_seconds', 'timeout_seconds', 'tolerance_seconds'];
let errorIds = 0; // ids for header rows' messages, so inputs can point at them

/** Wires the form in `panel`; `onScheduled(eventId)` runs after each success. */
export function scheduleForm(panel, { onScheduled }) {
  const $ = (id) => document.getElementById(id);
  const form = $('schedule-form');
  const time = $('schedule-at');
  const advanced = $('advanced');
  const status = $('form-status');
  const submit = $('schedule-submit');
  const headerBox = $('headers');

  // Time: the zone beside the picker, and what will be sent, as UTC.
  function showTime() {
    const date = fromInputValue(time.value);
    $('schedule-at-zone').textContent = zoneLabel(date ?? new Date());
    let text = 'choose a time';
    if (date) {
      text = date.toISOString();
      if (date.getTime() < Date.now()) text += ' (in the past: sent at once)';
    }
    $('schedule-at-utc').textContent = text;
  }
  function setTime(date) {
    time.value = toInputValue(date);
    showTime();
  }
  function inMinutes() {
    const minutes = Number($('in-minutes').value);
    if (Number.isFinite(minutes) && minutes >= 0) setTime(new Date(Date.now() + minutes * 60_000));
  }
  time.addEventListener('input', showTime);
  $('time-now').addEventListener('click', () => setTime(new Date()));
  $('time-in').addEventListener('click', inMinutes);
  $('in-minutes').addEventListener('keydown', (e) => {
    if (e.key === 'Enter') {
      e.preventDefault(); // Enter here means "set the time", not "submit".
      inMinutes();
    }
  });
  showTime();

  // Headers: one row each, a name and either a value or an env variable.
  function addHeader() {
    const name = h('input', { type: 'text', class: 'h-name', placeholder: 'Name', autocomplete: 'off', spellcheck: 'false' });
    const source = h('select', { class: 'h-source' },
      h('option', { value: 'value' }, 'Value'),
      h('option', { value: 'env' }, 'Env variable'));
    const value = h('input', { type: 'text', class: 'h-value', placeholder: 'Value', autocomplete: 'off', spellcheck: 'false' });
    const error = h('p', { class: 'error', hidden: true });
    const remove = h('button', { type: 'button', class: 'h-remove' }, 'Remove');
    const row = h('div', { class: 'header-row' }, name, source, value, remove, error);
    source.addEventListener('change', () => {
      value.placeholder = source.value === 'env' ? 'ENV_VARIABLE_NAME' : 'Value';
      labelRows();
    });
    remove.addEventListener('click', () => {
      const next = row.nextElementSibling;
      row.remove();
      labelRows();
      (next?.querySelector('.h-name') ?? $('add-header')).focus();
    });
    headerBox.append(row);
    labelRows();
    name.focus();
  }
  // Labels carry the row's number, so they are renewed when rows move.
  function labelRows() {
    headerBox.querySelectorAll('.header-row').forEach((row, i) => {
      const n = i + 1;
      const env = row.querySelector('.h-source').value === 'env';
      row.querySelector('.h-name').setAttribute('aria-label', `Header ${n} name`);
      row.querySelector('.h-source').setAttribute('aria-label', `Header ${n} value source`);
      row.querySelector('.h-value').setAttribute('aria-label',
        env ? `Header ${n} environment variable` : `Header ${n} value`);
      row.querySelector('.h-remove').setAttribute('aria-label', `Remove header ${n}`);
    });
  }
  $('add-header').addEventListener('click', addHeader);

  // Reading the form: args for chime, or errors with chime's own paths.
  function read() {
    const args = {};
    const errors = [];
    const rows = []; // the rows sent, so $.args.headers[i] finds its row
    const fail = (path, message) => errors.push({ path, message });

    const webhook = $('webhook').value.trim();
    if (webhook) args.webhook = webhook;
    else fail('$.args.webhook', 'Enter the URL to call.');

    const at = fromInputValue(time.value);
    if (at) args.schedule_at = at.toISOString();
    else fail('$.args.schedule_at', 'Choose a time, or use Now or … minutes from now.');

    const payload = $('payload').value;
    if (payload.trim() !== '') {
      try {
        args.payload = JSON.parse(payload);
      } catch (e) {
        fail('$.args.payload', `Not valid JSON: ${e.message}`);
      }
    }

    const headers = [];
    for (const row of headerBox.querySelectorAll('.header-row')) {
      const name = row.querySelector('.h-name').value.trim();
      const value = row.querySelector('.h-value').value;
      const env = row.querySelector('.h-source').value === 'env';
      if (!name && !value) continue; // an empty row is not a header
      const path = `$.args.headers[${rows.length}]`;
      rows.push(row);
      if (!name) fail(`${path}.name`, 'Enter the header’s name.');
      if (env && !value.trim()) fail(`${path}.value_from_env`, 'Enter the environment variable’s name.');
      headers.push(env ? { name, value_from_env: value.trim() } : { name, value });
    }
    if (headers.length) args.headers = headers;

    const retry = {};
    for (const key of RETRY_KEYS) {
      const input = $(key);
      const text = input.value.trim();
      // Retries are counted; the spans are seconds, which may be fractional.
      const whole = key === 'num_retries';
      const shape = whole ? /^\d+$/ : /^\d+(\.\d+)?$/;
      if (input.validity.badInput || (text !== '' && !shape.test(text))) {
        fail(`$.args.retry_conf.${key}`, whole ? 'A whole number, 0 or more.' : 'A number of seconds, 0 or more.');
      } else if (text !== '') {
        retry[key] = Number(text);
      }
    }
    if (Object.keys(retry).length) args.retry_conf = retry;

    const comment = $('comment').value.trim();
    if (comment) args.comment = comment;
    return { args, errors, rows };
  }

  // Errors: the path names the field; anything else goes above the button.
  function clearErrors() {
    for (const el of form.querySelectorAll('.error')) {
      el.hidden = true;
      el.textContent = '';
    }
    for (const el of form.querySelectorAll('[aria-invalid]')) el.removeAttribute('aria-invalid');
  }
  function place(path, rows) {
    const field = (id) => ({ message: $(`${id}-error`), input: $(id) });
    const [root, key, index, sub] = pathParts(path);
    if (root !== 'args') return { message: $('form-error') };
    switch (key) {
      case 'webhook':
      case 'payload':
      case 'comment':
        return field(key);
      case 'schedule_at':
        return field('schedule-at');
      case 'headers': {
        const row = rows[index];
        if (!row) return { message: $('headers-error'), input: $('add-header') };
        const input = row.querySelector(sub === 'name' || sub === undefined ? '.h-name' : '.h-value');
        return { message: row.querySelector('.error'), input };
      }
      case 'retry_conf':
        return RETRY_KEYS.includes(index) ? field(index) : { message: $('retry_conf-error'), input: $('num_retries') };
      default:
        return { message: $('form-error') };
    }
  }
  function showErrors(errors, rows) {
    let first = null;
    for (const { path, message } of errors) {
      const spot = place(path, rows);
      spot.message.textContent = spot.message.hidden ? message : `${spot.message.textContent} ${message}`;
      spot.message.hidden = false;
      if (spot.input) {
        spot.input.setAttribute('aria-invalid', 'true');
        // The row's message is not in the input's description yet.
        if (!spot.message.id) spot.message.id = `error-${++errorIds}`;
        if (!(spot.input.getAttribute('aria-describedby') ?? '').includes(spot.message.id)) {
          spot.input.setAttribute('aria-describedby',
            `${spot.input.getAttribute('aria-describedby') ?? ''} ${spot.message.id}`.trim());
        }
      }
      if (advanced.contains(spot.message)) advanced.open = true;
      if (spot.input) first ??= spot.input;
    }
    first?.focus();
  }

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    clearErrors();
    status.replaceChildren();
    delete status.dataset.eventId;
    const { args, errors, rows } = read();
    if (errors.length) {
      showErrors(errors, rows);
      return;
    }
    submit.disabled = true;
    status.textContent = 'Scheduling…';
    try {
      const answer = await metadata('create_scheduled_event', args);
      const at = new Date(args.schedule_at);
      status.dataset.eventId = answer.event_id;
      status.replaceChildren(
        'Scheduled event ', h('code', {}, answer.event_id),
        ` for ${localText(at)} ${zoneLabel(at)}, ${relative(at)}. `,
        h('a', { href: '#pending' }, 'See pending events'));
      onScheduled?.(answer.event_id);
    } catch (err) {
      status.replaceChildren();
      showErrors([{ path: err.path, message: err.message }], rows);
    } finally {
      submit.disabled = false;
    }
  });

  return { refresh: null };
}

/**
 * '$.args.headers[1].name' → ['args', 'headers', 1, 'name'], as Hasura
 * writes paths (keys that are not identifiers come as ['key']).
 */
export function pathParts(path) {
  const parts = [];
  const step = /\.([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]|\['((?:[^'\\]|\\.)*)'\]/y;
  step.lastIndex = 1; // after the '$'
  for (let m; (m = step.exec(path ?? '')) !== null;) {
    parts.push(m[1] ?? (m[2] !== undefined ? Number(m[2]) : m[3]));
  }
  return parts;
}
