import { type FormEvent, useState } from "react";

import { NOTIFICATION_TYPES } from "@herald/client";
import {
  ConnectionStatus,
  NotificationBell,
  NotificationCenter,
  PreferencesPanel,
  Toasts,
  useNotifications,
  useWebSocket,
} from "@herald/react";

import { publishTest } from "./devSession.js";

const CENTER_ID = "notification-center";

export function App({ user, origin }: { user: string; origin: string }) {
  const [centerOpen, setCenterOpen] = useState(true);
  const notifications = useNotifications({ pageSize: 10 });
  const { connection } = useWebSocket();
  return (
    <>
      <header className="demo-header">
        <h1>Herald</h1>
        <span className="demo-user">
          Signed in as <strong>{user}</strong>
          {connection && <span className="demo-connection"> ({connection.connectionId.slice(0, 8)})</span>}
        </span>
        <ConnectionStatus />
        <NotificationBell expanded={centerOpen} onToggle={() => setCenterOpen((open) => !open)} controls={CENTER_ID} />
      </header>
      <main className="demo-main">
        {centerOpen && <NotificationCenter id={CENTER_ID} notifications={notifications} />}
        <aside className="demo-side">
          <PublishForm user={user} origin={origin} />
          <PreferencesPanel />
        </aside>
      </main>
      <Toasts />
    </>
  );
}

/** Sends a test notification to this page's user through the dev publisher. */
function PublishForm({ user, origin }: { user: string; origin: string }) {
  const [type, setType] = useState<string>("new_like");
  const [title, setTitle] = useState("Hello from Herald");
  const [body, setBody] = useState("");
  const [result, setResult] = useState<string>("");
  const submit = async (event: FormEvent) => {
    event.preventDefault();
    try {
      const answer = await publishTest(origin, user, body ? { type, title, body } : { type, title });
      const skipped = answer.skipped?.[0];
      setResult(skipped ? `Not delivered: ${skipped.reason.replace(/_/g, " ")}` : "Sent");
    } catch (error) {
      setResult(`Refused: ${error instanceof Error ? error.message : String(error)}`);
    }
  };
  return (
    <form className="demo-publish" aria-label="Send a test notification" onSubmit={(e) => void submit(e)}>
      <h2>Send a test notification</h2>
      <label>
        Type
        <select value={type} onChange={(e) => setType(e.currentTarget.value)}>
          {NOTIFICATION_TYPES.map((t) => (
            <option key={t} value={t}>
              {t}
            </option>
          ))}
        </select>
      </label>
      <label>
        Title
        <input value={title} onChange={(e) => setTitle(e.currentTarget.value)} required maxLength={255} />
      </label>
      <label>
        Body
        <textarea value={body} onChange={(e) => setBody(e.currentTarget.value)} rows={2} />
      </label>
      <button type="submit">Send</button>
      <output aria-live="polite">{result}</output>
    </form>
  );
}
