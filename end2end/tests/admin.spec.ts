import { test, expect } from "@playwright/test";
import { E2E_ADMIN_TOKEN } from "../playwright.config";
import { collectConsoleErrors, deadLetter, hydrated, randomUUID, signIn } from "./helpers";

test("an admin page leads to sign-in and back; a wrong secret is refused; sign-out ends the session", async ({
  page,
}) => {
  await page.goto("/admin/dead-letters?type=x");
  await expect(page).toHaveURL(/\/login\?next=%2Fadmin%2Fdead-letters%3Ftype%3Dx$/);
  await hydrated(page);

  await page.getByTestId("secret").fill("not-the-secret");
  await page.getByTestId("sign-in").click();
  await expect(page.getByTestId("sign-in-error")).toHaveText("That admin secret is not right.");
  await expect(page).toHaveURL(/\/login/);

  await page.getByTestId("secret").fill(E2E_ADMIN_TOKEN);
  await page.getByTestId("sign-in").click();
  await page.waitForURL("**/admin/dead-letters?type=x");
  await hydrated(page);
  await expect(page.getByTestId("filter-type")).toHaveValue("x");

  const cookies = await page.context().cookies();
  const session = cookies.find((c) => c.name === "gc-status-session");
  expect(session?.httpOnly).toBe(true);
  expect(session?.sameSite).toBe("Strict");

  await page.getByTestId("sign-out").click();
  await page.waitForURL((url) => url.pathname === "/");
  await page.goto("/admin/audit");
  await expect(page).toHaveURL(/\/login\?next=%2Fadmin%2Faudit$/);
});

test("the console filter lives in the URL: a reload shows the same rows", async ({ page, request }) => {
  const errors = collectConsoleErrors(page);
  const topic = `v2.e2e.filter.${randomUUID()}`;
  const ids = [await deadLetter(request, topic), await deadLetter(request, topic)];
  await deadLetter(request, `v2.e2e.other.${randomUUID()}`);

  await signIn(page);
  await page.getByTestId("filter-type").fill(topic);
  await page.getByTestId("apply-filter").click();
  await expect(page).toHaveURL(new RegExp(`type=${topic.replace(/\./g, "\\.")}`));
  await expect(page.getByTestId("total")).toHaveText("2 dead letters match this filter.");
  const rows = page.locator("tr[data-letter]");
  await expect(rows).toHaveCount(2);
  const shown = (await rows.evaluateAll((els) => els.map((e) => e.getAttribute("data-letter")))).sort();
  expect(shown).toEqual([...ids].sort());

  const bookmark = page.url();
  await page.goto(bookmark);
  await hydrated(page);
  await expect(page.getByTestId("filter-type")).toHaveValue(topic);
  await expect(page.locator("tr[data-letter]")).toHaveCount(2);
  const again = (await page.locator("tr[data-letter]").evaluateAll((els) => els.map((e) => e.getAttribute("data-letter")))).sort();
  expect(again).toEqual(shown);
  expect(errors).toEqual([]);
});

test("replay one: it fails again and comes back with its earlier attempts kept", async ({ page, request }) => {
  const topic = `v2.e2e.replay.${randomUUID()}`;
  const id = await deadLetter(request, topic);
  await signIn(page, `/admin/dead-letters?type=${encodeURIComponent(topic)}`);
  const row = page.locator(`tr[data-letter="${id}"]`);
  await expect(row).toContainText("no interpretation for topic");

  await row.getByTestId("replay").click();
  await expect(page.getByTestId("console-result")).toHaveText(
    "Replayed 1 dead letter; it is being processed again.",
  );
  // Still uninterpretable: it returns, and its detail lists both attempts.
  await expect(page.locator(`tr[data-letter="${id}"]`)).toBeVisible();
  await page.locator(`tr[data-letter="${id}"]`).getByTestId("open").click();
  await hydrated(page);
  await expect(page.getByTestId("attempts").locator("li")).toHaveCount(2, { timeout: 15_000 });
  // The payload is shown as text, pretty-printed.
  await expect(page.getByTestId("payload")).toContainText(`"topicName": "${topic}"`);
});

test("replay all matching and discard act on exactly the filtered set after a confirmation", async ({
  page,
  request,
}) => {
  const topic = `v2.e2e.bulk.${randomUUID()}`;
  for (let i = 0; i < 3; i++) await deadLetter(request, topic);
  const bystander = `v2.e2e.bystander.${randomUUID()}`;
  const bystanderId = await deadLetter(request, bystander);

  await signIn(page, `/admin/dead-letters?type=${encodeURIComponent(topic)}`);
  await expect(page.getByTestId("total")).toHaveText("3 dead letters match this filter.");

  // Replay all matching: the confirmation states how many.
  await page.getByTestId("replay-matching").click();
  await expect(page.getByTestId("confirm")).toBeVisible();
  await expect(page.getByTestId("confirm-question")).toContainText("Replay 3 dead letters matching this filter?");
  await page.getByTestId("confirm-ok").click();
  await expect(page.getByTestId("console-result")).toHaveText(
    "Replayed 3 dead letters; they are being processed again.",
  );
  // They fail again and come back; the bystander was never touched.
  await expect(page.locator("tr[data-letter]")).toHaveCount(3);

  // Cancelling discards nothing.
  await page.getByTestId("discard-matching").click();
  await expect(page.getByTestId("confirm-question")).toContainText("Discard 3 dead letters matching this filter for good?");
  await page.keyboard.press("Escape");
  await expect(page.getByTestId("confirm")).toBeHidden();
  await expect(page.locator("tr[data-letter]")).toHaveCount(3);

  // Discard two selected, then the last one on its own.
  const rows = page.locator("tr[data-letter]");
  await rows.nth(0).getByTestId("select").check();
  await rows.nth(1).getByTestId("select").check();
  await page.getByTestId("discard-selected").click();
  await expect(page.getByTestId("confirm-question")).toContainText("Discard 2 dead letters (selected) for good?");
  await page.getByTestId("confirm-ok").click();
  await expect(page.getByTestId("console-result")).toHaveText("Discarded 2 dead letters.");
  await expect(page.locator("tr[data-letter]")).toHaveCount(1);
  await page.locator("tr[data-letter]").getByTestId("discard").click();
  await expect(page.getByTestId("confirm-question")).toContainText("Discard 1 dead letter for good?");
  await page.getByTestId("confirm-ok").click();
  await expect(page.getByTestId("console-result")).toHaveText("Discarded 1 dead letter.");
  await expect(page.getByTestId("total")).toHaveText("0 dead letters match this filter.");

  const bystanderLeft = await request.get(`/api/v2/admin/dead-letters/${bystanderId}`, {
    headers: { authorization: `Bearer ${E2E_ADMIN_TOKEN}` },
  });
  expect(bystanderLeft.status()).toBe(200);

  // Every action is in the audit trail, with counts and the filter.
  await page.goto("/admin/audit");
  await hydrated(page);
  const entries = page.locator("tr[data-action]");
  await expect(entries.first()).toHaveAttribute("data-action", "discard");
  await expect(entries.first()).toContainText("1");
  await expect(page.locator('tr[data-action="replay"]').first()).toContainText(topic);
  await expect(page.locator('tr[data-action="sign_in"]').first()).toBeVisible();
});

test("a viewer sees counts but no controls, and forged calls are refused", async ({ page, request, baseURL }) => {
  const topic = `v2.e2e.viewer.${randomUUID()}`;
  const id = await deadLetter(request, topic);
  await page.goto("/");
  await hydrated(page);
  await expect(page.getByTestId("count-dead")).toHaveText(/^\d+$/);
  // A count, not a link to the console; no sign-out, no replay buttons, no errors.
  await expect(page.locator('a[href="/admin/dead-letters"]')).toHaveCount(0);
  await expect(page.getByTestId("sign-out")).toHaveCount(0);
  await expect(page.getByTestId("replay")).toHaveCount(0);
  await expect(page.locator("body")).not.toContainText("no interpretation for topic");

  const act = { act: "Replay", target: { Ids: [id] } };
  // Without a session (no cookie at all): refused by the server function itself.
  const anonymous = await request.post("/api/dead-letters/act", {
    headers: { "content-type": "application/json", origin: baseURL! },
    data: act,
  });
  expect(anonymous.status()).toBe(403);

  // With an admin session but from another site: refused by the cross-site check.
  await signIn(page);
  const cookie = (await page.context().cookies()).map((c) => `${c.name}=${c.value}`).join("; ");
  const crossSite = await request.post("/api/dead-letters/act", {
    headers: { "content-type": "application/json", origin: "http://evil.test", cookie },
    data: act,
  });
  expect(crossSite.status()).toBe(403);
  const fetchSite = await request.post("/api/dead-letters/act", {
    headers: { "content-type": "application/json", "sec-fetch-site": "cross-site", cookie },
    data: act,
  });
  expect(fetchSite.status()).toBe(403);
  // Neither header, a cookie, and no CSRF token: refused too.
  const noHeaders = await request.post("/api/dead-letters/act", {
    headers: { "content-type": "application/json", cookie },
    data: act,
  });
  expect(noHeaders.status()).toBe(403);

  // The letter is still there: nothing was replayed.
  const still = await request.get(`/api/v2/admin/dead-letters/${encodeURIComponent(id)}`, {
    headers: { authorization: `Bearer ${E2E_ADMIN_TOKEN}` },
  });
  expect((await still.json()).attempts).toBe(1);
});
