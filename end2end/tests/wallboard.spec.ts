import { test, expect } from "@playwright/test";
import { E2E_ALERT_WAITING } from "../playwright.config";
import { collectConsoleErrors, hydrated, postSigned, queued, randomUUID } from "./helpers";

test("the wallboard is complete before any script runs", async ({ browser, request }) => {
  const queueId = `q-ssr-${randomUUID()}`;
  await postSigned(request, queued(queueId, "Server-rendered"));
  const context = await browser.newContext({ javaScriptEnabled: false });
  const page = await context.newPage();
  await expect
    .poll(async () => {
      await page.goto("/");
      return page.locator(`tr[data-queue="${queueId}"]`).getByTestId("queue-waiting").textContent();
    })
    .toBe("1");
  await expect(page.getByTestId("count-total")).toHaveText(/^\d+$/);
  await expect(page.getByTestId("connection")).toHaveText("Not live");
  await context.close();
});

test("signed events change the wallboard without a reload, busiest queue first", async ({ page, request }) => {
  const errors = collectConsoleErrors(page);
  await page.goto("/");
  await hydrated(page);
  await expect(page.getByTestId("connection")).toHaveAttribute("data-state", "live");
  const before = Number(await page.getByTestId("count-total").innerText());

  const queueId = `q-live-${randomUUID()}`;
  const answer = await postSigned(request, queued(queueId, "E2E live queue"));
  expect(answer.duplicate).toBe(false);

  await expect(page.getByTestId("count-total")).toHaveText(String(before + 1));
  const row = page.locator(`tr[data-queue="${queueId}"]`);
  await expect(row).toContainText("E2E live queue");
  await expect(row.getByTestId("queue-waiting")).toHaveText("1");
  await expect(row.getByTestId("queue-longest")).toHaveText(/^\d+ s$/);

  await postSigned(request, queued(queueId, "E2E live queue"));
  await expect(row.getByTestId("queue-waiting")).toHaveText("2");
  // The longest wait ticks in the browser between updates.
  const first = await row.getByTestId("queue-longest").innerText();
  await expect(row.getByTestId("queue-longest")).not.toHaveText(first, { timeout: 5_000 });
  expect(errors).toEqual([]);
});

test("a queue over a threshold is flagged with colour and text", async ({ page, request }) => {
  await page.goto("/");
  await hydrated(page);
  const queueId = `q-breach-${randomUUID()}`;
  for (let i = 0; i < E2E_ALERT_WAITING; i++) await postSigned(request, queued(queueId, "Busy queue"));
  const row = page.locator(`tr[data-queue="${queueId}"]`);
  await expect(row.getByTestId("queue-waiting")).toHaveText(String(E2E_ALERT_WAITING));
  await expect(row).toHaveAttribute("data-breach", "false");

  await postSigned(request, queued(queueId, "Busy queue"));
  await expect(row).toHaveAttribute("data-breach", "true");
  await expect(row.getByRole("img", { name: "Over threshold: waiting" })).toBeVisible();
  // Busiest first: it now leads every queue with fewer waiting.
  const waiting = await page.locator("tr[data-queue]").getByTestId("queue-waiting").allInnerTexts();
  const numbers = waiting.map(Number);
  expect(numbers).toEqual([...numbers].sort((a, b) => b - a));
});

test("the stale badge appears after the configured quiet time", async ({ page, request }) => {
  await page.goto("/");
  await hydrated(page);
  await postSigned(request, queued(`q-stale-${randomUUID()}`, "Quiet queue"));
  await expect(page.getByTestId("stale")).toHaveCount(0);
  await expect(page.getByTestId("stale")).toContainText("Stale: no event for", { timeout: 15_000 });
  // A new event clears it.
  await postSigned(request, queued(`q-stale-${randomUUID()}`, "Quiet queue"));
  await expect(page.getByTestId("stale")).toHaveCount(0);
});

test("the connection badge says when the stream is lost and back", async ({ page }) => {
  // As during a deploy: the proxy answers the stream with 502 until the server is back.
  await page.route("**/api/v2/stream", (route) => route.fulfill({ status: 502, body: "Bad Gateway" }));
  await page.goto("/");
  await hydrated(page);
  await expect(page.getByTestId("connection")).toHaveAttribute("data-state", "reconnecting");
  await expect(page.getByTestId("connection")).toHaveText("Reconnecting…");
  // The browser's own EventSource gives up after an error answer; the page keeps trying.
  await page.unroute("**/api/v2/stream");
  await expect(page.getByTestId("connection")).toHaveAttribute("data-state", "live", { timeout: 15_000 });
  await expect(page.getByTestId("connection")).toHaveText("Live");
});
