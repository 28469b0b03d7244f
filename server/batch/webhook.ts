/**
 * Webhooks: when a job finishes, its view is POSTed as JSON to the URL the caller gave (http or https
 * only, checked when the job is accepted). A few attempts with backoff; redirects are not followed.
 */

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

export async function deliverWebhook(url: string, payload: unknown, options: WebhookOptions = DEFAULT_WEBHOOK_OPTIONS): Promise<Delivery> {
  const body = JSON.stringify(payload);
  let error = 'not attempted';
  for (let attempt = 1; attempt <= options.attempts; attempt++) {
    try {
      const res = await fetch(url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'user-agent': 'streamdiffusion-node-webhook' },
        body,
        redirect: 'manual',
        signal: AbortSignal.timeout(options.timeoutMs),
      });
      await res.body?.cancel();
      if (res.ok) return { ok: true, attempts: attempt, error: null };
      error = `HTTP ${res.status}`;
    } catch (e) {
      error = e instanceof Error ? e.message : String(e);
    }
    if (attempt < options.attempts) await new Promise((r) => setTimeout(r, options.backoffMs * 2 ** (attempt - 1)));
  }
  return { ok: false, attempts: options.attempts, error };
}
