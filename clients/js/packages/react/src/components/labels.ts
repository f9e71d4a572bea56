// Words shown to people, in one place.

import type { ConnectionState } from "@herald/client";

export const STATE_LABELS: Record<ConnectionState, string> = {
  idle: "Offline",
  connecting: "Connecting…",
  open: "Connected",
  reconnecting: "Reconnecting…",
  stopped: "Disconnected",
};

/** `new_like` -> `New like`. */
export function typeLabel(type: string): string {
  const words = type.replace(/_/g, " ");
  return words.charAt(0).toUpperCase() + words.slice(1);
}

export function formatTime(ms: number): string {
  return new Date(ms).toLocaleString();
}
