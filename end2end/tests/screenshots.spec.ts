import { test, expect } from "@playwright/test";
import * as path from "node:path";
import { deadLetter, hydrated, postSigned, queued, randomUUID, signIn } from "./helpers";

// Current screenshots for the README, light and dark. Written to SCREENSHOT_DIR (the README's
// docs/screenshots when refreshed by hand) or target/screenshots.
const dir = process.env.SCREENSHOT_DIR ?? path.resolve(__dirname, "..", "..", "target", "screenshots");

for (const scheme of ["light", "dark"] as const) {
  test(`screenshots (${scheme})`, async ({ browser, request }) => {
    for (const [id, name, waiting] of [
      ["q-sales", "Sales", 3],
      ["q-support", "Support", 1],
      ["q-billing", "Billing", 0],
    ] as const) {
      for (let i = 0; i < waiting; i++) await postSigned(request, queued(id, name));
    }
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
