import { usePreferences } from "../hooks.js";
import { typeLabel } from "./labels.js";

/** In-app delivery on or off, overall and per notification type. */
export function PreferencesPanel() {
  const { preferences, loading, error, update } = usePreferences();
  return (
    <form className="herald-preferences" aria-label="Notification preferences" onSubmit={(e) => e.preventDefault()}>
      <h2>Preferences</h2>
      {error && (
        <p className="herald-error" role="alert">
          {error.message}
        </p>
      )}
      {loading && !preferences && <p>Loading…</p>}
      {preferences && (
        <>
          <label className="herald-switch">
            <input
              type="checkbox"
              checked={preferences.inAppEnabled}
              onChange={(e) => void update({ inAppEnabled: e.currentTarget.checked })}
            />
            In-app notifications
          </label>
          <fieldset disabled={!preferences.inAppEnabled}>
            <legend>By type</legend>
            {Object.entries(preferences.types).map(([type, switches]) => (
              <label key={type} className="herald-switch">
                <input
                  type="checkbox"
                  checked={switches.inApp}
                  onChange={(e) => void update({ types: { [type]: { inApp: e.currentTarget.checked } } })}
                />
                {typeLabel(type)}
              </label>
            ))}
          </fieldset>
        </>
      )}
    </form>
  );
}
