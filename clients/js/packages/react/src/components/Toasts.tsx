import { useCallback, useEffect, useRef, useState } from "react";

import type { Notification } from "@herald/client";

import { useNotificationListener } from "../hooks.js";

export interface ToastsProps {
  /** How long a toast stays (5 s). */
  durationMs?: number;
  /** Most toasts shown at once; older ones make room (a replay of hundreds shows the last few). */
  max?: number;
}

/** A toast for every new notification, in a live region screen readers announce. */
export function Toasts({ durationMs = 5_000, max = 3 }: ToastsProps) {
  const [toasts, setToasts] = useState<Notification[]>([]);
  const timers = useRef(new Map<string, ReturnType<typeof setTimeout>>());
  const dismiss = useCallback((id: string) => {
    clearTimeout(timers.current.get(id));
    timers.current.delete(id);
    setToasts((current) => current.filter((t) => t.id !== id));
  }, []);
  useNotificationListener((notification) => {
    setToasts((current) => [notification, ...current].slice(0, max));
    timers.current.set(
      notification.id,
      setTimeout(() => dismiss(notification.id), durationMs),
    );
  });
  useEffect(() => {
    const pending = timers.current;
    return () => pending.forEach((timer) => clearTimeout(timer));
  }, []);
  return (
    <div className="herald-toasts" role="region" aria-label="New notifications" aria-live="polite">
      {toasts.map((toast) => (
        <div key={toast.id} className="herald-toast" role="status" data-notification-id={toast.id}>
          <div className="herald-toast-text">
            <strong>{toast.title}</strong>
            {toast.body && <p>{toast.body}</p>}
          </div>
          <button type="button" aria-label={`Dismiss: ${toast.title}`} onClick={() => dismiss(toast.id)}>
            ×
          </button>
        </div>
      ))}
    </div>
  );
}
