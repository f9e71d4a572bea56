-- The plan's notification_preferences table (section 3), in SQLite's dialect.
CREATE TABLE notification_preferences (
  user_id        TEXT PRIMARY KEY NOT NULL,
  email_enabled  BOOLEAN NOT NULL DEFAULT 1,
  push_enabled   BOOLEAN NOT NULL DEFAULT 1,
  in_app_enabled BOOLEAN NOT NULL DEFAULT 1,
  preferences    TEXT NOT NULL DEFAULT '{}',
  created_at     TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP,
  updated_at     TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP
);
