// Owns turning data into elements. h() sets text with textContent and never
// parses HTML, so what comes from events (URLs, payloads, comments) can
// never become markup.

/**
 * h('button', { class: 'x', onclick: f, dataset: { id } }, 'text', child)
 * Attributes that are null, undefined or false are left out; true gives an
 * empty attribute; `on<event>` adds a listener.
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === 'dataset') Object.assign(el.dataset, value);
    else if (key.startsWith('on')) el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  el.append(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
  return el;
}

/** JSON as a person reads it: indented, and strings that hold JSON unwrapped. */
export function pretty(value) {
  if (typeof value === 'string') {
    try {
      return JSON.stringify(JSON.parse(value), null, 2);
    } catch {
      return value;
    }
  }
  return JSON.stringify(value, null, 2) ?? 'null';
}
