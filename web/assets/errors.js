// @ts-check
/**
 * Readable errors in a live region: each distinct message once, with a repeat count (a stream can fail
 * on every frame), a Dismiss button, and the control at fault marked aria-invalid until the next success.
 * Each message has a kind: a rejected setting (`setting`) goes once the next update succeeds, a failed
 * frame (`frame`) once the next output arrives; others stay until dismissed or the stream restarts.
 */

/** @typedef {'setting' | 'frame' | 'other'} ErrorKind */

/** Most messages kept on screen; the oldest go first. */
const MAX_SHOWN = 5;

export class ErrorList {
  /**
   * @param {HTMLElement} container a role="alert" element
   * @param {HTMLFormElement} [form] controls are found in it by the error's field
   */
  constructor(container, form) {
    this.container = container;
    this.form = form;
    /** @type {Map<string, { item: HTMLElement, count: number, kind: ErrorKind, field: string | undefined }>} */
    this.shown = new Map();
  }

  /**
   * @param {string} message
   * @param {{ code?: string, field?: string, kind?: ErrorKind }} [details]
   */
  show(message, details = {}) {
    const field = details.field?.split('.')[0];
    const text = `${field && !message.startsWith(field) ? `${field}: ` : ''}${message}${details.code ? ` (${details.code})` : ''}`;
    const existing = this.shown.get(text);
    if (existing) {
      existing.count++;
      const counter = existing.item.querySelector('.count');
      if (counter) counter.textContent = ` ×${existing.count}`;
      return;
    }
    const item = document.createElement('p');
    item.className = 'error';
    const span = document.createElement('span');
    span.textContent = text;
    const counter = document.createElement('span');
    counter.className = 'count';
    const dismiss = document.createElement('button');
    dismiss.type = 'button';
    dismiss.textContent = 'Dismiss';
    dismiss.setAttribute('aria-label', `Dismiss: ${text}`);
    dismiss.addEventListener('click', () => this.remove(text));
    item.append(span, counter, dismiss);
    this.container.append(item);
    this.shown.set(text, { item, count: 1, kind: details.kind ?? 'other', field });
    if (this.shown.size > MAX_SHOWN) {
      const oldest = this.shown.keys().next().value;
      if (oldest !== undefined) this.remove(oldest);
    }
    const control = field && this.form?.elements.namedItem(field);
    if (control instanceof HTMLElement) control.setAttribute('aria-invalid', 'true');
  }

  /** @param {string} text */
  remove(text) {
    this.shown.get(text)?.item.remove();
    this.shown.delete(text);
  }

  /**
   * Unmarks the controls (after the server accepted their values), except those named in `keep`.
   * @param {readonly string[]} [keep]
   */
  clearFields(keep = []) {
    for (const el of this.form?.querySelectorAll('[aria-invalid="true"]') ?? []) {
      if (!keep.includes(el.getAttribute('name') ?? '')) el.removeAttribute('aria-invalid');
    }
  }

  /**
   * Removes the messages of one kind (a later success made them stale), except those about `keep` fields.
   * @param {ErrorKind} kind
   * @param {readonly string[]} [keep]
   */
  clearKind(kind, keep = []) {
    for (const [text, entry] of [...this.shown]) {
      if (entry.kind === kind && !(entry.field && keep.includes(entry.field))) this.remove(text);
    }
    if (kind === 'setting') this.clearFields(keep);
  }

  clear() {
    for (const text of [...this.shown.keys()]) this.remove(text);
    this.clearFields();
  }
}
