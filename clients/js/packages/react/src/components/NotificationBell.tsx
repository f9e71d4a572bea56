import { useUnreadCount } from "../hooks.js";

export interface NotificationBellProps {
  expanded: boolean;
  onToggle: () => void;
  /** The id of the panel the bell opens. */
  controls: string;
}

/** A button with the unread count: its label says the count, the badge shows it. */
export function NotificationBell({ expanded, onToggle, controls }: NotificationBellProps) {
  const unread = useUnreadCount();
  return (
    <button
      type="button"
      className="herald-bell"
      aria-label={`Notifications, ${unread} unread`}
      aria-expanded={expanded}
      aria-controls={controls}
      onClick={onToggle}
    >
      <svg className="herald-bell-icon" viewBox="0 0 24 24" width="20" height="20" aria-hidden="true" focusable="false">
        <path
          fill="currentColor"
          d="M12 22a2.5 2.5 0 0 0 2.45-2h-4.9A2.5 2.5 0 0 0 12 22Zm7-6V11a7 7 0 0 0-5.5-6.84V3.5a1.5 1.5 0 0 0-3 0v.66A7 7 0 0 0 5 11v5l-2 2v1h18v-1l-2-2Z"
        />
      </svg>
      {unread > 0 && (
        <span className="herald-badge" data-testid="unread-badge" aria-hidden="true">
          {unread > 99 ? "99+" : unread}
        </span>
      )}
    </button>
  );
}
