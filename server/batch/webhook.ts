/**
 * Webhooks: when a job finishes, its view is POSTed as JSON to the URL the caller gave (http or https
 * only, checked when the job is accepted). A few attempts with backoff; redirects are not followed.
 * Credentials in the URL (https://user:password@host/...) are sent as HTTP Basic authorization, never in
 * the URL, and never appear in an error a job view or a log shows.
 */
import { redactText } from '../log.ts';

export interface WebhookOptions {
  /** Per attempt, ms. */
  readonly timeoutMs: number;
  readonly attempts: number;
  /** Wait before the second attempt, doubled for each later one, ms. */
  readonly backoffMs: number;
}

export const DEFAULT_WEBHOOK_OPTIONS: WebhookOptions = Object.freeze({ timeoutMs: 10_000, attempts: 3, backoffMs: 1000 });

export interface Delivery {
  readonly ok: boolean;
  readonly attempts: number;
  readonly error: string | null;
}

/** The URL without user:password@, and those credentials as an Authorization header. */
function splitCredentials(raw: string): { url: string; authorization?: string } {
  const url = new URL(raw);
  if (!url.username && !url.password) return { url: url.href };
  const basic = Buffer.from(`${decodeURIComponent(url.username)}:${decodeURIComponent(url.password)}`).toString('base64');
  url.username = '';
  url.password = '';
  return { url: url.href, authorization: `Basic ${basic}` };
}

export async function deliverWebhook(target: string, payload: unknown, options: WebhookOptions = DEFAULT_WEBHOOK_OPTIONS): Promise<Delivery> {
  const body = JSON.stringify(payload);
  let error = 'not attempted';
  let url: string;
  let authorization: string | undefined;
  try {
    ({ url, authorization } = splitCredentials(target));
  } catch {
    return { ok: false, attempts: 0, error: 'the webhook URL is not a URL' };
  }
  for (let attempt = 1; attempt <= options.attempts; attempt++) {
    try {
      const res = await fetch(url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'user-agent': 'streamdiffusion-node-webhook', ...(authorization ? { authorization } : {}) },
        body,
        redirect: 'manual',
        signal: AbortSignal.timeout(options.timeoutMs),
      });
      await res.body?.cancel();
      if (res.ok) return { ok: true, attempts: attempt, error: null };
      error = `HTTP ${res.status}`;
    } catch (e) {
      const cause = (e as { cause?: unknown }).cause;
      error = redactText(`${e instanceof Error ? e.message : String(e)}${cause instanceof Error ? `: ${cause.message}` : ''}`);
    }
    if (attempt < options.attempts) await new Promise((r) => setTimeout(r, options.backoffMs * 2 ** (attempt - 1)));
  }
  return { ok: false, attempts: options.attempts, error };
}
