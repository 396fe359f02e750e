// Entry point: state, routing between the dashboard and settings, the error
// banner and the token prompt.

import { ApiError, detailLines, onTokenNeeded, setToken } from './api.js';
import { readState, writeState } from './state.js';
import { Dashboard } from './dashboard.js';
import { Settings } from './settings.js';
import { Detail } from './detail.js';

const $ = (sel) => document.querySelector(sel);

// --- error banner -----------------------------------------------------------

const banner = {
  el: $('#banner'),
  source: null,
  show(error, source = 'app') {
    const title = this.el.querySelector('.banner-title');
    const list = this.el.querySelector('.banner-details');
    let text;
    let lines;
    if (error instanceof ApiError) {
      // A refusal (4xx) says what is wrong in words; the status and path
      // only help with a failure of the service itself.
      text = error.status >= 500 ? `${error.error} (HTTP ${error.status}, ${error.path.split('?')[0]})` : error.error;
      lines = error.detailLines();
    } else {
      text = error?.message || String(error);
      lines = detailLines(error?.details);
    }
    // Details that only repeat the message add nothing.
    lines = lines.filter((l) => !text.includes(l) && !text.includes(l.slice(l.indexOf(': ') + 2)));
    title.textContent = text;
    list.replaceChildren(...lines.map((l) => Object.assign(document.createElement('li'), { textContent: l })));
    this.el.hidden = false;
    this.source = source;
  },
  clear(source) {
    if (source && this.source !== source) return;
    this.el.hidden = true;
    this.source = null;
  },
};
banner.el.querySelector('.banner-close').addEventListener('click', () => banner.clear());
window.addEventListener('unhandledrejection', (e) => banner.show(e.reason));
window.addEventListener('error', (e) => banner.show(e.error || e.message));

// --- token prompt -------------------------------------------------------------

const tokenDialog = $('#token-dialog');
onTokenNeeded(
  (why) =>
    new Promise((resolve) => {
      const form = tokenDialog.querySelector('form');
      const error = tokenDialog.querySelector('.token-error');
      error.hidden = !why;
      error.textContent = why;
      form.token.value = '';
      tokenDialog.addEventListener(
        'close',
        () => {
          if (tokenDialog.returnValue === 'ok' && form.token.value.trim()) {
            setToken(form.token.value.trim());
            resolve(form.token.value.trim());
          } else {
            resolve(null);
          }
        },
        { once: true },
      );
      tokenDialog.returnValue = '';
      tokenDialog.showModal();
      form.token.focus();
    }),
);

// --- status line --------------------------------------------------------------

const statusEl = $('#status');
const status = {
  /** `busy`: a request is running; `error`: the last one failed (red dot). */
  set(text, { busy = false, error = false } = {}) {
    statusEl.textContent = text;
    statusEl.classList.toggle('busy', busy && !error);
    // While failing, a running retry keeps the red dot.
    if (!busy) statusEl.classList.toggle('error', error);
    statusEl.dataset.state = statusEl.classList.contains('error') ? 'error' : 'ok';
  },
};

// --- pages ----------------------------------------------------------------------

const state = readState();
const ctx = {
  state,
  banner,
  status,
  setState(patch) {
    Object.assign(state, patch);
    writeState(state);
    render();
  },
};
ctx.detail = new Detail(ctx);
const dashboard = new Dashboard(ctx);
const settings = new Settings(ctx);

function render() {
  const onSettings = state.page === 'settings';
  for (const a of document.querySelectorAll('.tabs a')) {
    if (a.dataset.page === state.page) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  $('#page-dashboard').hidden = onSettings;
  $('#page-settings').hidden = !onSettings;
  document.title = onSettings ? 'Settings · pulse-metrics' : 'pulse-metrics';
  if (onSettings) {
    dashboard.hide();
    settings.show();
  } else {
    settings.hide();
    dashboard.show();
  }
}

window.addEventListener('hashchange', () => {
  const page = location.hash.startsWith('#/settings') ? 'settings' : 'dashboard';
  if (page !== state.page) {
    banner.clear();
    ctx.setState({ page });
  }
});

writeState(state);
render();
