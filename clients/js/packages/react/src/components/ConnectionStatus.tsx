import { useWebSocket } from "../hooks.js";
import { STATE_LABELS } from "./labels.js";

/** The connection's state, announced politely to screen readers when it changes. */
export function ConnectionStatus() {
  const { state } = useWebSocket();
  return (
    <span className="herald-status" role="status" data-state={state}>
      <span className="herald-status-dot" aria-hidden="true" />
      {STATE_LABELS[state]}
    </span>
  );
}
