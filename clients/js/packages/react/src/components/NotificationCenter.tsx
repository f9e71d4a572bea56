import { safeHref } from "@herald/client";

import { type NotificationsView } from "../hooks.js";
import { formatTime, typeLabel } from "./labels.js";

export interface NotificationCenterProps {
  id: string;
  notifications: NotificationsView;
}

/** The list: newest first, read state, mark read / mark all read / delete, load more. Titles and
 * bodies are rendered as text (React escapes them), links only when safe. */
export function NotificationCenter({ id, notifications }: NotificationCenterProps) {
  const { items, loading, error, hasMore, loadMore, markRead, markAllRead, remove } = notifications;
  const unread = items.some((i) => i.readAt === null);
  return (
    <section id={id} className="herald-center" aria-label="Notifications">
      <header className="herald-center-header">
        <h2>Notifications</h2>
        <button type="button" onClick={() => void markAllRead()} disabled={!unread}>
          Mark all read
        </button>
      </header>
      {error && (
        <p className="herald-error" role="alert">
          {error.message}
        </p>
      )}
      {items.length === 0 && !loading && <p className="herald-empty">No notifications</p>}
      <ul className="herald-list" aria-busy={loading}>
        {items.map((item) => {
          const href = safeHref(item.actionUrl);
          return (
            <li key={item.id} className={item.readAt === null ? "herald-item unread" : "herald-item"} data-notification-id={item.id}>
              <div className="herald-item-text">
                <strong className="herald-item-title">{item.title}</strong>
                {item.body && <p className="herald-item-body">{item.body}</p>}
                <span className="herald-item-meta">
                  {typeLabel(item.type)} · <time dateTime={new Date(item.createdAt).toISOString()}>{formatTime(item.createdAt)}</time>
                  {item.readAt === null && <span className="herald-unread-dot"> · unread</span>}
                </span>
                {href && (
                  <a className="herald-item-link" href={href} rel="noopener noreferrer">
                    Open
                  </a>
                )}
              </div>
              <div className="herald-item-actions">
                {item.readAt === null && (
                  <button type="button" aria-label={`Mark read: ${item.title}`} onClick={() => void markRead(item.id)}>
                    Mark read
                  </button>
                )}
                <button type="button" aria-label={`Delete: ${item.title}`} onClick={() => void remove(item.id)}>
                  Delete
                </button>
              </div>
            </li>
          );
        })}
      </ul>
      {hasMore && (
        <button type="button" className="herald-more" onClick={() => void loadMore()} disabled={loading}>
          Load more
        </button>
      )}
    </section>
  );
}
