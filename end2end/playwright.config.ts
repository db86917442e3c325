import { defineConfig } from "@playwright/test";
import * as path from "node:path";
import * as fs from "node:fs";

// The release binary on a port of its own with a fresh database, so a test never passes
// against some other process or yesterday's data.
const port = Number(process.env.GC_STATUS_E2E_PORT ?? 3137);
const root = path.resolve(__dirname, "..");
const tmp = path.join(root, "target", "tmp");
fs.mkdirSync(tmp, { recursive: true });
const database = path.join(tmp, `e2e-${process.pid}-${Date.now()}.db`);

export const E2E_SECRET = "e2e-webhook-secret";
export const E2E_ADMIN_TOKEN = "e2e-admin-token";
export const E2E_VIEWER_TOKEN = "e2e-viewer-token";
/** The portal origin allowed to frame the widget (served by the tests themselves). */
export const E2E_PORTAL = `http://127.0.0.1:${port + 2}`;
/** A portal origin that is not allowed to frame anything. */
export const E2E_OTHER_SITE = `http://127.0.0.1:${port + 3}`;
/** A second instance that requires the viewer token. */
export const VIEWER_PORT = port + 1;
/** A third instance that forwards to a sink the forwarding test serves itself. */
export const FORWARDING_PORT = port + 5;
export const E2E_SINK = `http://127.0.0.1:${port + 4}`;
/** A portal on another *site* (localhost is not 127.0.0.1), where a SameSite cookie of
 * gc-status is never sent: allowed to frame the viewer-token instance's widget. */
export const E2E_CROSS_SITE_PORTAL = `http://localhost:${port + 6}`;
/** Thresholds and quiet time the tests trip. */
export const E2E_ALERT_WAITING = 2;
export const E2E_CRITICAL_WAITING = 4;
/** A queue whose own thresholds (from the queues file) are lower than the global ones. */
export const E2E_STRICT_QUEUE = "q-strict";
export const E2E_STALE_AFTER_SECS = 3;

/** The queues file of the main instance: a name and a queue with thresholds of its own. */
const queuesFile = path.join(path.dirname(database), "queues.json");
fs.mkdirSync(path.dirname(queuesFile), { recursive: true });
fs.writeFileSync(
  queuesFile,
  JSON.stringify({
    [E2E_STRICT_QUEUE]: { name: "Strict queue", thresholds: { critical: { waiting: 0 } } },
  }),
);

function server(listen: number, db: string, extra: Record<string, string>) {
  return {
    command: path.join(root, "target", "release", "gc-status"),
    cwd: root,
    url: `http://127.0.0.1:${listen}/readyz`,
    reuseExistingServer: false,
    timeout: 60_000,
    stdout: "ignore" as const,
    stderr: "pipe" as const,
    env: {
      LEPTOS_SITE_ADDR: `127.0.0.1:${listen}`,
      LEPTOS_SITE_ROOT: path.join(root, "target", "site"),
      GC_STATUS_DATABASE_URL: `sqlite://${db}`,
      GC_STATUS_HMAC_SECRETS: E2E_SECRET,
      GC_STATUS_ADMIN_TOKEN: E2E_ADMIN_TOKEN,
      RUST_LOG: "warn",
      ...extra,
    },
  };
}

export default defineConfig({
  testDir: "./tests",
  timeout: 30_000,
  expect: { timeout: 10_000 },
  fullyParallel: false,
  workers: 1,
  retries: 0,
  reporter: [["list"]],
  use: {
    baseURL: `http://127.0.0.1:${port}`,
    trace: "off",
    launchOptions: {
      executablePath: process.env.CHROMIUM_PATH ?? "/usr/bin/chromium",
      args: [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
      ],
    },
  },
  webServer: [
    server(port, database, {
      GC_STATUS_FRAME_ANCESTORS: E2E_PORTAL,
      GC_STATUS_ALERT_WAITING: String(E2E_ALERT_WAITING),
      GC_STATUS_STALE_AFTER_SECS: String(E2E_STALE_AFTER_SECS),
      GC_STATUS_ALERT_SERVICE_LEVEL: "80",
      GC_STATUS_CRITICAL_WAITING: String(E2E_CRITICAL_WAITING),
      GC_STATUS_QUEUES_FILE: queuesFile,
      GC_STATUS_TIMEZONE: "Europe/Berlin",
    }),
    server(VIEWER_PORT, database.replace(/\.db$/, "-viewer.db"), {
      GC_STATUS_VIEWER_TOKEN: E2E_VIEWER_TOKEN,
      GC_STATUS_FRAME_ANCESTORS: E2E_CROSS_SITE_PORTAL,
    }),
    server(FORWARDING_PORT, database.replace(/\.db$/, "-forwarding.db"), {
      GC_STATUS_SINK_URL: `${E2E_SINK}/sink`,
      GC_STATUS_SINK_PAUSE_AFTER: "1",
      GC_STATUS_SINK_COOLDOWN_SECS: "1",
      GC_STATUS_RETRY_BASE_MS: "100",
    }),
  ],
});
