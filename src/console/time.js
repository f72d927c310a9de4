// Owns time as the console shows and reads it. chime stores and answers in
// UTC; the page shows the browser's zone, always with the zone's name, and
// sends what the picker says converted to UTC.

import { h } from './dom.js';

/** The browser's IANA zone, e.g. "Europe/Paris". */
export const zone = Intl.DateTimeFormat().resolvedOptions().timeZone || 'local time';

const pad = (n) => String(n).padStart(2, '0');

/** "UTC+02:00" for `date` in the browser's zone (it changes with DST). */
export function offset(date = new Date()) {
  const minutes = -date.getTimezoneOffset();
  const sign = minutes < 0 ? '-' : '+';
  const abs = Math.abs(minutes);
  return `UTC${sign}${pad(Math.floor(abs / 60))}:${pad(abs % 60)}`;
}

/** "Europe/Paris (UTC+02:00)" */
export function zoneLabel(date = new Date()) {
  return `${zone} (${offset(date)})`;
}

/** "2024-06-18 20:45:00" in the browser's zone. */
export function localText(date) {
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())} ` +
    `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`;
}

/** The value a `datetime-local` input takes for `date`: local, to the second. */
export function toInputValue(date) {
  return localText(date).replace(' ', 'T');
}

/**
 * The moment a `datetime-local` value names in the browser's zone, or null.
 * A date-time without an offset is local time to `Date` (ECMAScript's
 * rule); a time skipped by a DST change moves forward, as the clock did.
 */
export function fromInputValue(value) {
  if (!value) return null;
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? null : date;
}

const relativeFormat = new Intl.RelativeTimeFormat(undefined, { numeric: 'auto' });
const UNITS = [['day', 86400], ['hour', 3600], ['minute', 60], ['second', 1]];

/** "in 5 minutes", "3 seconds ago". */
export function relative(date, now = Date.now()) {
  const seconds = Math.round((date.getTime() - now) / 1000);
  for (const [unit, size] of UNITS) {
    if (Math.abs(seconds) >= size || unit === 'second') {
      return relativeFormat.format(Math.trunc(seconds / size), unit);
    }
  }
  return '';
}

/** A <time> showing `iso` in the browser's zone, with the UTC text on hover. */
export function timeEl(iso) {
  if (!iso) return h('span', { class: 'muted' }, '—');
  const date = new Date(iso);
  return h('time', { datetime: iso, title: `${iso} (UTC)` }, localText(date));
}
