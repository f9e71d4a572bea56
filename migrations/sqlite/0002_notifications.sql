-- The plan's notifications table (section 3) in SQLite's dialect, plus what delivery needs: a
-- per-user sequence, the channel, acknowledgement and attempts. Times are Unix milliseconds.
CREATE TABLE notifications (
  id           TEXT PRIMARY KEY NOT NULL,
  user_id      TEXT NOT NULL,
  seq          INTEGER NOT NULL,
  type         TEXT NOT NULL,
  channel      TEXT NOT NULL,
  title        TEXT NOT NULL,
  body         TEXT,
  icon         TEXT,
  action_url   TEXT,
  data         TEXT,
  read_at      INTEGER,
  delivered_at INTEGER,
  attempts     INTEGER NOT NULL DEFAULT 0,
  created_at   INTEGER NOT NULL,
  expires_at   INTEGER
);

-- Keyset pagination, replay and gap filling all walk a user's notifications by seq.
CREATE UNIQUE INDEX idx_notifications_user_seq ON notifications (user_id, seq);
CREATE INDEX idx_notifications_user_id ON notifications (user_id);
CREATE INDEX idx_notifications_user_unread ON notifications (user_id) WHERE read_at IS NULL;
CREATE INDEX idx_notifications_created_at ON notifications (created_at);

-- The last seq handed out per user, bumped in the same transaction as the insert.
CREATE TABLE user_sequences (
  user_id  TEXT PRIMARY KEY NOT NULL,
  last_seq INTEGER NOT NULL
);

-- Explicit subscription choices; channels without a row follow their defaultSubscribed.
CREATE TABLE channel_subscriptions (
  user_id    TEXT NOT NULL,
  channel    TEXT NOT NULL,
  subscribed BOOLEAN NOT NULL,
  updated_at INTEGER NOT NULL,
  PRIMARY KEY (user_id, channel)
);

-- First answers of publishes made with an Idempotency-Key.
CREATE TABLE idempotency_keys (
  publisher    TEXT NOT NULL,
  key          TEXT NOT NULL,
  request_hash TEXT NOT NULL,
  response     TEXT NOT NULL,
  created_at   INTEGER NOT NULL,
  PRIMARY KEY (publisher, key)
);
