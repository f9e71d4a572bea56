-- Herald's PostgreSQL schema: the plan's two tables (section 3) with their indexes, plus what delivery
-- needs (per-user seq, channel, acknowledgement, attempts), subscriptions and idempotency keys.

CREATE TABLE notifications (
  id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
  user_id VARCHAR(255) NOT NULL,
  type VARCHAR(50) NOT NULL,
  title VARCHAR(255) NOT NULL,
  body TEXT,
  data JSONB,
  read_at TIMESTAMP WITH TIME ZONE,
  created_at TIMESTAMP WITH TIME ZONE DEFAULT NOW(),
  expires_at TIMESTAMP WITH TIME ZONE,
  -- Herald's additions.
  seq BIGINT NOT NULL,
  channel VARCHAR(64) NOT NULL,
  icon VARCHAR(255),
  action_url TEXT,
  delivered_at TIMESTAMP WITH TIME ZONE,
  attempts INTEGER NOT NULL DEFAULT 0
);

CREATE INDEX idx_notifications_user_id ON notifications(user_id);
CREATE INDEX idx_notifications_user_unread ON notifications(user_id) WHERE read_at IS NULL;
-- Keyset pagination, replay and gap filling walk a user's notifications by seq.
CREATE UNIQUE INDEX idx_notifications_user_seq ON notifications(user_id, seq);
CREATE INDEX idx_notifications_created_at ON notifications(created_at);

CREATE TABLE notification_preferences (
  user_id VARCHAR(255) PRIMARY KEY,
  email_enabled BOOLEAN DEFAULT true,
  push_enabled BOOLEAN DEFAULT true,
  in_app_enabled BOOLEAN DEFAULT true,
  preferences JSONB DEFAULT '{}',
  created_at TIMESTAMP WITH TIME ZONE DEFAULT NOW(),
  updated_at TIMESTAMP WITH TIME ZONE DEFAULT NOW()
);

-- The last seq handed out per user, bumped in the same statement as the insert.
CREATE TABLE user_sequences (
  user_id VARCHAR(255) PRIMARY KEY,
  last_seq BIGINT NOT NULL
);

-- Explicit subscription choices; channels without a row follow their defaultSubscribed.
CREATE TABLE channel_subscriptions (
  user_id VARCHAR(255) NOT NULL,
  channel VARCHAR(64) NOT NULL,
  subscribed BOOLEAN NOT NULL,
  updated_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW(),
  PRIMARY KEY (user_id, channel)
);

-- First answers of publishes made with an Idempotency-Key.
CREATE TABLE idempotency_keys (
  publisher VARCHAR(255) NOT NULL,
  key VARCHAR(255) NOT NULL,
  request_hash VARCHAR(128) NOT NULL,
  response JSONB NOT NULL,
  created_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW(),
  PRIMARY KEY (publisher, key)
);
CREATE INDEX idx_idempotency_keys_created_at ON idempotency_keys(created_at);
