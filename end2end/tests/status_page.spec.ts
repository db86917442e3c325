import { test, expect, type Page } from "@playwright/test";
import { createHmac, randomUUID } from "node:crypto";
import { E2E_ADMIN_TOKEN, E2E_SECRET } from "../playwright.config";

function collectConsoleErrors(page: Page): string[] {
  const errors: string[] = [];
  page.on("console", (msg) => {
    if (msg.type() === "error") errors.push(msg.text());
  });
  page.on("pageerror", (err) => errors.push(err.message));
  return errors;
}

async function countOf(page: Page, status: string): Promise<number> {
  return Number(await page.getByTestId(`count-${status}`).innerText());
}

test("show_counts: the page hydrates and shows stored events by status", async ({ page }) => {
  const errors = collectConsoleErrors(page);
  await page.goto("/");
  await expect(page).toHaveTitle("gc-status");
  await expect(page.locator('[data-hydrated="true"]')).toBeVisible();
  for (const status of ["pending", "processing", "done", "total"]) {
    await expect(page.getByTestId(`count-${status}`)).toHaveText(/^\d+$/);
  }
  expect(errors).toEqual([]);
});

test("receive_webhook: a signed delivery is stored, processed and shown on the open page without a reload", async ({
  page,
  request,
}) => {
  const errors = collectConsoleErrors(page);
  await page.goto("/");
  await expect(page.locator('[data-hydrated="true"]')).toBeVisible();
  const before = await countOf(page, "total");
  const queueId = `q-e2e-${randomUUID()}`;

  const body = JSON.stringify({
    event: "conversation:updated",
    id: `e2e-${randomUUID()}`,
    timestamp: new Date().toISOString(),
    data: { state: "queued", queueId, queueName: "E2E queue", conversationId: randomUUID() },
  });
  const signature = createHmac("sha256", E2E_SECRET).update(body).digest("hex");
  const response = await request.post("/api/v2/webhooks/gc-status", {
    headers: { "content-type": "application/json", "x-gc-signature": signature },
    data: body,
  });
  expect(response.status()).toBe(202);
  expect((await response.json()).duplicate).toBe(false);

  await expect(page.getByTestId("count-total")).toHaveText(String(before + 1));
  // The background worker processes it: the queue shows one conversation waiting.
  const row = page.locator(`tr[data-queue="${queueId}"]`);
  await expect(row).toContainText("E2E queue");
  await expect(row.getByTestId("queue-waiting")).toHaveText("1");
  expect(errors).toEqual([]);
});

test("reject_unsigned: an unsigned delivery is refused and not counted", async ({ page, request }) => {
  await page.goto("/");
  await expect(page.locator('[data-hydrated="true"]')).toBeVisible();
  const before = await countOf(page, "total");
  const response = await request.post("/api/v2/webhooks/gc-status", {
    headers: { "content-type": "application/json" },
    data: JSON.stringify({ event: "x", timestamp: new Date().toISOString(), data: {} }),
  });
  expect(response.status()).toBe(401);
  await page.reload();
  await expect(page.locator('[data-hydrated="true"]')).toBeVisible();
  expect(await countOf(page, "total")).toBe(before);
});

test("replay_dead_letter: an admin replays a dead letter from the page", async ({ page, request }) => {
  const errors = collectConsoleErrors(page);
  await page.goto("/");
  await expect(page.locator('[data-hydrated="true"]')).toBeVisible();

  // A topic gc-status cannot interpret: dead-lettered at once with the reason.
  const topic = `v2.e2e.unknown.${randomUUID()}`;
  const body = JSON.stringify({ topicName: topic, eventBody: { queueId: "q-dead" } });
  const signature = createHmac("sha256", E2E_SECRET).update(body).digest("hex");
  const response = await request.post("/api/v2/webhooks/gc-status", {
    headers: { "content-type": "application/json", "x-gc-signature": signature },
    data: body,
  });
  expect(response.status()).toBe(202);
  const id = (await response.json()).id as string;

  const row = page.locator(`tr[data-letter="${id}"]`);
  await expect(row).toContainText(topic);
  await expect(row).toContainText("no interpretation for topic");

  // Without the token the replay is refused.
  await row.getByTestId("replay").click();
  await expect(page.getByTestId("replay-result")).toContainText("Replay failed");

  await page.getByTestId("admin-token").fill(E2E_ADMIN_TOKEN);
  await page.locator(`tr[data-letter="${id}"]`).getByTestId("replay").click();
  await expect(page.getByTestId("replay-result")).toHaveText("Replayed 1 dead letter(s).");
  // It is processed again and, still uninterpretable, returns to the dead letters.
  await expect(page.locator(`tr[data-letter="${id}"]`)).toContainText(topic);
  expect(errors.filter((e) => !e.includes("500"))).toEqual([]);
});
