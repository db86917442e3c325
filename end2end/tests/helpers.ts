import { expect, type APIRequestContext, type Page } from "@playwright/test";
import { createHmac, randomUUID } from "node:crypto";
import { E2E_ADMIN_TOKEN, E2E_SECRET } from "../playwright.config";

export { E2E_ADMIN_TOKEN, randomUUID };

/** Console errors and uncaught exceptions of a page, to assert there are none. */
export function collectConsoleErrors(page: Page): string[] {
  const errors: string[] = [];
  page.on("console", (msg) => {
    if (msg.type() === "error") errors.push(msg.text());
  });
  page.on("pageerror", (err) => errors.push(err.message));
  return errors;
}

/** Posts a body signed as a real sender would (to `origin`, else the main instance);
 * returns the JSON answer. */
export async function postSigned(request: APIRequestContext, payload: unknown, origin = "") {
  const body = JSON.stringify(payload);
  const signature = createHmac("sha256", E2E_SECRET).update(body).digest("hex");
  const response = await request.post(`${origin}/api/v2/webhooks/gc-status`, {
    headers: { "content-type": "application/json", "x-gc-signature": signature },
    data: body,
  });
  expect(response.status()).toBe(202);
  return (await response.json()) as { id: string; duplicate: boolean };
}

/** A conversation entering `queueId` now. */
export function queued(queueId: string, queueName: string) {
  return {
    event: "conversation:updated",
    id: `e2e-${randomUUID()}`,
    timestamp: new Date().toISOString(),
    data: { state: "queued", queueId, queueName, conversationId: randomUUID() },
  };
}

/** A notification of a topic gc-status cannot interpret: dead-lettered at once. */
export async function deadLetter(request: APIRequestContext, topic: string, queueId = "q-dead") {
  const answer = await postSigned(request, {
    topicName: topic,
    eventBody: { queueId, nonce: randomUUID() },
  });
  return answer.id;
}

export async function hydrated(page: Page) {
  await expect(page.locator('[data-hydrated="true"]').first()).toBeVisible();
}

/** Signs in through the form (of the instance at `origin`, else the main one) and lands on
 * `next`. */
export async function signIn(page: Page, next = "/admin/dead-letters", origin = "") {
  await page.goto(`${origin}/login?next=${encodeURIComponent(next)}`);
  await hydrated(page);
  await page.getByTestId("secret").fill(E2E_ADMIN_TOKEN);
  await page.getByTestId("sign-in").click();
  await page.waitForURL((url) => url.pathname + url.search === next);
  await hydrated(page);
}

/** Figures of one media type of a queue observation (Genesys's real notification shape). */
export interface Observed {
  waiting: number;
  offered: number;
  answered: number;
  abandoned: number;
  /** Answered within the target, of `answered + abandoned`. */
  withinTarget: number;
  answerMsSum: number;
}

/** A `v2.analytics.queues.{id}.observations` notification for the current 30-minute interval. */
export function observation(queueId: string, mediaType: string, f: Observed) {
  const now = Date.now();
  const start = now - (now % 1_800_000);
  const interval = `${new Date(start).toISOString()}/${new Date(start + 1_800_000).toISOString()}`;
  const denominator = f.answered + f.abandoned;
  return {
    topicName: `v2.analytics.queues.${queueId}.observations`,
    eventBody: {
      group: { queueId, mediaType },
      data: [
        {
          interval,
          metrics: [
            { metric: "oWaiting", stats: { count: f.waiting } },
            { metric: "oLongestWaiting", stats: { count: f.waiting, calculatedMetricValue: now - 95_000 } },
            { metric: "nOffered", stats: { count: f.offered } },
            { metric: "tAnswered", stats: { count: f.answered, sum: f.answerMsSum, max: f.answerMsSum } },
            { metric: "tAbandon", stats: { count: f.abandoned, sum: 1000 * f.abandoned } },
            {
              metric: "oServiceLevel",
              stats: { ratio: f.withinTarget / denominator, numerator: f.withinTarget, denominator, target: 0.8 },
            },
          ],
        },
      ],
    },
  };
}
