import { test, expect } from "@playwright/test";
import * as path from "node:path";
import { deadLetter, hydrated, postSigned, queued, randomUUID, signIn } from "./helpers";

// Current screenshots for the README, light and dark. Written to SCREENSHOT_DIR (the README's
// docs/screenshots when refreshed by hand) or target/screenshots.
const dir = process.env.SCREENSHOT_DIR ?? path.resolve(__dirname, "..", "..", "target", "screenshots");

for (const scheme of ["light", "dark"] as const) {
  test(`screenshots (${scheme})`, async ({ browser, request }) => {
    // A morning's worth of traffic: answered and abandoned calls, some still waiting.
    const at = (agoSecs: number) => new Date(Date.now() - agoSecs * 1000).toISOString();
    const conversation = async (queueId: string, queueName: string, states: [string, number][]) => {
      const conversationId = randomUUID();
      for (const [state, ago] of states)
        await postSigned(request, {
          event: "conversation:updated",
          id: `e2e-${randomUUID()}`,
          timestamp: at(ago),
          data: { state, queueId, queueName, conversationId },
        });
    };
    for (const [id, name, answered, abandoned, waiting] of [
      ["q-sales", "Sales", 6, 2, 3],
      ["q-billing", "Billing", 4, 0, 1],
      ["q-returns", "Returns", 2, 1, 0],
    ] as const) {
      for (let i = 0; i < answered; i++)
        await conversation(id, name, [["queued", 600 + i * 40], ["connected", 560 + i * 35], ["disconnected", 300]]);
      for (let i = 0; i < abandoned; i++)
        await conversation(id, name, [["queued", 500], ["disconnected", 420 - i * 30]]);
      for (let i = 0; i < waiting; i++) await conversation(id, name, [["queued", 95 - i * 30]]);
    }
    // A queue Genesys reports observations for: agents on queue and service level.
    await postSigned(request, {
      topicName: "v2.analytics.queues.q-support.observations",
      version: "2",
      eventBody: {
        group: { queueId: "q-support", mediaType: "voice" },
        data: [
          {
            interval: `${at(1)}/${at(0)}`,
            metrics: [
              { metric: "oWaiting", stats: { count: 2 } },
              { metric: "oInteracting", stats: { count: 5 } },
              { metric: "oOnQueueUsers", qualifier: "IDLE", stats: { count: 2 } },
              { metric: "oOnQueueUsers", qualifier: "INTERACTING", stats: { count: 5 } },
              { metric: "oServiceLevel", stats: { ratio: 0.72, numerator: 18, denominator: 25, target: 0.8 } },
            ],
          },
        ],
      },
    });
    await deadLetter(request, `v2.routing.queues.${randomUUID()}.members`, "q-support");

    const context = await browser.newContext({
      colorScheme: scheme,
      viewport: { width: 1280, height: 760 },
    });
    const page = await context.newPage();
    await page.goto("/");
    await hydrated(page);
    await expect(page.locator('tr[data-queue="q-sales"]')).toBeVisible();
    await page.screenshot({ path: path.join(dir, `wallboard-${scheme}.png`) });

    await page.setViewportSize({ width: 340, height: 420 });
    await page.goto("/widget");
    await hydrated(page);
    await page.screenshot({ path: path.join(dir, `widget-${scheme}.png`) });

    await page.setViewportSize({ width: 1280, height: 760 });
    await signIn(page);
    await expect(page.locator("tr[data-letter]").first()).toBeVisible();
    await page.screenshot({ path: path.join(dir, `console-${scheme}.png`) });
    await context.close();
  });
}
