// How a webhook delivery is signed: HMAC-SHA256, keyed by the webhook's
// secret, over "<unix seconds>.<body>", sent as `t=<seconds>,v1=<hex>`.
// The timestamp is inside the MAC so a receiver can refuse old replays.
import { createHmac } from 'node:crypto';

export function signWebhookBody(secret: string, timestampSeconds: number, body: string): string {
  const mac = createHmac('sha256', secret).update(`${timestampSeconds}.${body}`).digest('hex');
  return `t=${timestampSeconds},v1=${mac}`;
}
