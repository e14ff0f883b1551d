/** Where the dashboard listens: its own port on 127.0.0.1, never a network's address. */

import type { HerdConfig } from "../config/config.ts";

/** The address the dashboard listens on. */
export const DASHBOARD_HOST = "127.0.0.1";

/** The dashboard's page for `config`: `http://127.0.0.1:<dashboard.port>/`. */
export function dashboardUrl(config: HerdConfig): string {
  return `http://${DASHBOARD_HOST}:${config.dashboard.port}/`;
}
