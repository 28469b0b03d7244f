// @ts-check
/**
 * Readable errors in a live region: each distinct message once, with a repeat count (a stream can fail
 * on every frame), a Dismiss button, and the control at fault marked aria-invalid until the next success.
 */

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
    /** @type {Map<string, { item: HTMLElement, count: number }>} */
    this.shown = new Map();
  }

  /**
   * @param {string} message
   * @param {{ code?: string, field?: string }} [details]
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
    this.shown.set(text, { item, count: 1 });
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

  clear() {
    for (const text of [...this.shown.keys()]) this.remove(text);
    this.clearFields();
  }
}
