// Owns the conversation with chime: every call goes to the public
// POST /v1/metadata, with the admin secret when there is one. The secret
// lives in sessionStorage only (gone when the tab closes) and is asked for
// when chime answers 401.

const ENDPOINT = new URL('../v1/metadata', import.meta.url);
const SECRET_KEY = 'chime.adminSecret';

/** An error answer: Hasura's {code, error, path}, plus the HTTP status (0: no answer). */
export class ApiError extends Error {
  constructor(status, body) {
    super(body?.error ?? `chime answered HTTP ${status}`);
    this.status = status;
    this.code = body?.code ?? 'unexpected';
    this.path = body?.path ?? '$';
  }
}

let ask = async () => null; // replaced by the page's dialog, see onSecretNeeded
let asking = null; // the one prompt every request refused meanwhile waits on
let declined = false; // the user cancelled: reads do not ask again on every auto refresh

/**
 * Sets how to ask for the secret: `fn(refused)` resolves to the secret, or
 * null when the user declines; `refused` says a secret was sent and refused.
 */
export function onSecretNeeded(fn) {
  ask = fn;
}

export function hasSecret() {
  return sessionStorage.getItem(SECRET_KEY) !== null;
}

export function forgetSecret() {
  sessionStorage.removeItem(SECRET_KEY);
  secretChanged();
}

/** Tells the page (which shows a "Forget" button) that the secret changed. */
function secretChanged() {
  window.dispatchEvent(new Event('chime-secret'));
}

/** Asks for the secret now, even after a decline; true when one was given. */
export async function requestSecret() {
  declined = false;
  return (await promptOnce(hasSecret())) !== null;
}

function promptOnce(refused) {
  asking ??= ask(refused)
    .then((secret) => {
      if (secret === null) declined = true;
      else sessionStorage.setItem(SECRET_KEY, secret);
      secretChanged();
      return secret;
    })
    .finally(() => {
      asking = null;
    });
  return asking;
}

/** Runs one metadata command; resolves to the answer, or throws an ApiError. */
export async function metadata(type, args) {
  for (;;) {
    const secret = sessionStorage.getItem(SECRET_KEY);
    const headers = { 'Content-Type': 'application/json' };
    if (secret !== null) headers['X-Hasura-Admin-Secret'] = secret;
    let response;
    try {
      response = await fetch(ENDPOINT, {
        method: 'POST',
        headers,
        body: JSON.stringify({ type, args }),
        cache: 'no-store',
      });
    } catch (e) {
      throw new ApiError(0, { code: 'unreachable', error: `Cannot reach chime: ${e.message}` });
    }
    const body = await response.json().catch(() => null);
    if (response.ok) return body;
    if (response.status !== 401) throw new ApiError(response.status, body);
    // Another request may have stored a new secret while this one was out.
    if (sessionStorage.getItem(SECRET_KEY) !== secret) continue;
    // After a decline, reads (auto refresh) fail quietly; a write is the
    // user acting, so it asks again.
    const read = type.startsWith('get_');
    if ((declined && read) || (await promptOnce(secret !== null)) === null) {
      throw new ApiError(401, body);
    }
  }
}
