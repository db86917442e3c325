import { test, expect } from "@playwright/test";
import { E2E_ALERT_WAITING, E2E_CRITICAL_WAITING, E2E_STRICT_QUEUE } from "../playwright.config";
import {
  collectConsoleErrors,
  deadLetter,
  hydrated,
  observation,
  postSigned,
  queued,
  randomUUID,
  signIn,
} from "./helpers";

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

test("a queue over a threshold is flagged at two levels, each with its reason as text", async ({ page, request }) => {
  await page.goto("/");
  await hydrated(page);
  const queueId = `q-breach-${randomUUID()}`;
  for (let i = 0; i < E2E_ALERT_WAITING; i++) await postSigned(request, queued(queueId, "Busy queue"));
  const row = page.locator(`tr[data-queue="${queueId}"]`);
  await expect(row.getByTestId("queue-waiting")).toHaveText(String(E2E_ALERT_WAITING));
  await expect(row).toHaveAttribute("data-breach", "false");

  await postSigned(request, queued(queueId, "Busy queue"));
  await expect(row).toHaveAttribute("data-level", "warning");
  await expect(row.getByTestId("breach")).toHaveText(
    `⚠ Warning: ${E2E_ALERT_WAITING + 1} waiting (over ${E2E_ALERT_WAITING})`,
  );
  for (let i = E2E_ALERT_WAITING + 1; i <= E2E_CRITICAL_WAITING; i++) {
    await postSigned(request, queued(queueId, "Busy queue"));
  }
  await expect(row).toHaveAttribute("data-level", "critical");
  await expect(row.getByTestId("breach")).toHaveText(
    `⛔ Critical: ${E2E_CRITICAL_WAITING + 1} waiting (over ${E2E_CRITICAL_WAITING})`,
  );
  // A queue with thresholds of its own (the queues file) is critical at its first caller.
  await postSigned(request, queued(E2E_STRICT_QUEUE, "named in the payload"));
  const strict = page.locator(`tr[data-queue="${E2E_STRICT_QUEUE}"]`);
  await expect(strict).toHaveAttribute("data-level", "critical");
  await expect(strict.getByTestId("breach")).toContainText("Critical: 1 waiting (over 0)");
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

test("the totals row weights service level across queues, and the media filter lives in the URL", async ({
  page,
  request,
}) => {
  const a = `q-media-a-${randomUUID()}`;
  const b = `q-media-b-${randomUUID()}`;
  // Queue A: callbacks 9 of 10 within the target, and a message; queue B: callbacks 1 of 2.
  // (Callbacks: no other test sends them, so the filtered totals are these two queues'.)
  await postSigned(request, observation(a, "callback", { waiting: 3, offered: 11, answered: 9, abandoned: 1, withinTarget: 9, answerMsSum: 90_000 }));
  await postSigned(request, observation(a, "message", { waiting: 1, offered: 4, answered: 4, abandoned: 0, withinTarget: 4, answerMsSum: 40_000 }));
  await postSigned(request, observation(b, "callback", { waiting: 0, offered: 2, answered: 1, abandoned: 1, withinTarget: 1, answerMsSum: 110_000 }));
  const errors = collectConsoleErrors(page);
  await page.goto("/");
  await hydrated(page);
  const rowA = page.locator(`tr[data-queue="${a}"]`);
  await expect(rowA.getByTestId("queue-waiting")).toHaveText("4");
  // Queue A's split by media type, under its row.
  await expect(page.locator(`tr[data-queue="${a}"] + tr.media-row`)).toHaveAttribute("data-media", "callback");
  await expect(rowA.getByTestId("queue-interval")).toContainText("15 offered");

  await page.getByTestId("media-filter").filter({ hasText: "Callback" }).click();
  await page.waitForURL((url) => url.search === "?media=callback");
  await expect(page.locator("table.queues")).toHaveAttribute("data-media", "callback");
  await expect(page.locator(`tr[data-queue]`)).toHaveCount(2);
  await expect(rowA.getByTestId("queue-waiting")).toHaveText("3");
  await expect(rowA.getByTestId("queue-service-level")).toHaveText("90 %");
  // 10 of 12 within the target: 83 %, not the 70 % a mean of 90 % and 50 % would give.
  const totals = page.getByTestId("totals");
  await expect(totals.getByTestId("total-service-level")).toHaveText("83 %");
  await expect(totals.getByTestId("total-offered")).toHaveText("13");
  await expect(totals.getByTestId("total-abandon-rate")).toHaveText("15 %");
  // 200 s over 10 answers.
  await expect(totals.getByTestId("total-asa")).toHaveText("20 s");
  // The filter survives a reload, and the widget takes it too.
  await page.reload();
  await expect(page.locator(`tr[data-queue]`)).toHaveCount(2);
  await page.goto("/widget?media=message");
  await expect(page.locator("li[data-queue]")).toHaveCount(1);
  await expect(page.locator(`li[data-queue="${a}"]`).getByTestId("queue-waiting")).toHaveText("1");
  expect(errors).toEqual([]);
});

test("the wall-display mode shows the worst queues first and no controls", async ({ page, request }) => {
  const calm = `q-tv-calm-${randomUUID()}`;
  await postSigned(request, queued(calm, "Calm queue"));
  await postSigned(request, queued(E2E_STRICT_QUEUE, "named in the payload"));
  await page.goto("/?tv=1");
  await hydrated(page);
  await expect(page.locator("main.wallboard.tv")).toBeVisible();
  await expect(page.locator("header.top")).toHaveCount(0);
  await expect(page.locator(".media-filter")).toHaveCount(0);
  await expect(page.locator("button, form")).toHaveCount(0);
  const levels = await page.locator("tr[data-queue]").evaluateAll((rows) =>
    rows.map((r) => r.getAttribute("data-level") ?? ""),
  );
  const rank = (l: string) => (l === "critical" ? 2 : l === "warning" ? 1 : 0);
  expect(levels.map(rank)).toEqual([...levels.map(rank)].sort((x, y) => y - x));
  expect(levels[0]).toBe("critical");
  // Times are in GC_STATUS_TIMEZONE (Europe/Berlin here), labelled with its zone.
  await expect(page.locator(".as-of")).toContainText(/CES?T/);
});

for (const width of [1280, 390]) {
  test(`nothing overflows at ${width} px: the wallboard and the console`, async ({ browser, request }) => {
    const context = await browser.newContext({ viewport: { width, height: 900 } });
    const page = await context.newPage();
    const long = `q-long-${randomUUID()}`;
    await postSigned(request, queued(long, "A queue with a name far too long to fit into its column at all"));
    await postSigned(request, observation(`q-asa-${randomUUID()}`, "voice", { waiting: 1, offered: 1, answered: 1, abandoned: 0, withinTarget: 1, answerMsSum: 52_000 }));
    await page.goto("/");
    await hydrated(page);
    await expect(page.locator(`tr[data-queue="${long}"]`)).toBeVisible();
    const pageOverflow = () => page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    expect(await pageOverflow()).toBeLessThanOrEqual(0);
    // Figures never wrap onto a second line, and the long name truncates with its full text kept.
    const wrapped = await page.locator("table.queues td.num").evaluateAll((cells) =>
      cells.filter((c) => {
        const range = document.createRange();
        range.selectNodeContents(c);
        return new Set([...range.getClientRects()].map((r) => Math.round(r.top))).size > 1;
      }).length,
    );
    expect(wrapped).toBe(0);
    const name = page.locator(`tr[data-queue="${long}"] .name`);
    await expect(name).toHaveAttribute("title", /far too long/);

    // The console: a long topic name truncates and the row actions stay on screen.
    await deadLetter(request, `v2.routing.queues.${randomUUID()}.members.and.a.very.long.topic.suffix`);
    await signIn(page);
    const row = page.locator("tbody tr").first();
    await expect(row).toBeVisible();
    const type = row.locator("td.type");
    // One line, truncated (it used to break one character per line).
    const typeBox = await type.locator("span").boundingBox();
    expect(typeBox?.height ?? 0).toBeLessThan(30);
    await expect(type.locator("span")).toHaveAttribute("title", /very\.long\.topic/);
    // Times in GC_STATUS_TIMEZONE (Europe/Berlin here), with the zone's label.
    await expect(row.locator("td.time").first()).toContainText(/ CES?T$/);
    if (width >= 1280) {
      const actions = await row.locator("td.row-actions").boundingBox();
      expect((actions?.x ?? 0) + (actions?.width ?? 0)).toBeLessThanOrEqual(width);
    }
    expect(await pageOverflow()).toBeLessThanOrEqual(0);
    await context.close();
  });
}
