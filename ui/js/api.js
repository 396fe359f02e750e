// The HTTP API: fetch with the token, errors as ApiError (never swallowed).

const TOKEN_KEY = 'pulse-metrics.token';

/** An error answered by the API (or a network failure, status 0). */
export class ApiError extends Error {
  constructor(status, error, details, path) {
    super(error);
    this.status = status;
    this.error = error;
    this.details = details;
    this.path = path;
  }

  /** The details as lines of text (strings, `{key, error}` objects, or anything else). */
  detailLines() {
    return detailLines(this.details);
  }
}

export function detailLines(details) {
  if (details == null || details === '') return [];
  const list = Array.isArray(details) ? details : [details];
  return list.map((d) => {
    if (typeof d === 'string') return d;
    if (d && typeof d === 'object') {
      const key = d.key ?? d.field ?? d.index;
      const text = d.error ?? d.message ?? d.reason ?? JSON.stringify(d);
      return key != null ? `${key}: ${text}` : text;
    }
    return String(d);
  });
}

export function getToken() {
  try {
    return localStorage.getItem(TOKEN_KEY) || '';
  } catch {
    return '';
  }
}

export function setToken(token) {
  try {
    if (token) localStorage.setItem(TOKEN_KEY, token);
    else localStorage.removeItem(TOKEN_KEY);
  } catch {
    // Private mode: the token lives for this page only.
  }
  memoryToken = token;
}

let memoryToken = '';
let askToken = null;
let pendingAsk = null;

/**
 * Registers the function that asks the user for a token when the API answers
 * 401. It returns a promise of the token, or null when the user cancels.
 */
export function onTokenNeeded(fn) {
  askToken = fn;
}

async function request(method, path, body, retried = false) {
  const headers = { Accept: 'application/json' };
  const token = getToken() || memoryToken;
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store',
    });
  } catch (e) {
    throw new ApiError(0, `Cannot reach the service (${e.message || e})`, null, path);
  }
  if (response.status === 401 && askToken && !retried) {
    pendingAsk ??= Promise.resolve(askToken(token ? 'The saved token was refused.' : '')).finally(() => {
      pendingAsk = null;
    });
    const fresh = await pendingAsk;
    if (fresh) return request(method, path, body, true);
  }
  const text = await response.text();
  let json = null;
  if (text) {
    try {
      json = JSON.parse(text);
    } catch {
      json = null;
    }
  }
  if (!response.ok) {
    const error =
      (json && typeof json.error === 'string' && json.error) ||
      `${response.status} ${response.statusText || 'error'}${text && !json ? `: ${text.slice(0, 200)}` : ''}`;
    throw new ApiError(response.status, error, json?.details, path);
  }
  if (json === null && text) throw new ApiError(response.status, `Not JSON from ${path}`, text.slice(0, 200), path);
  return json;
}

export const api = {
  get: (path) => request('GET', path),
  put: (path, body) => request('PUT', path, body),
  post: (path, body) => request('POST', path, body),
  del: (path) => request('DELETE', path),
};

/** Builds `path?k=v&...`, leaving out null/undefined values. */
export function withQuery(path, params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v != null && v !== '') q.set(k, String(v));
  const s = q.toString();
  return s ? `${path}?${s}` : path;
}
