-- Unread counts kept, not counted (as SQLite's migration 0006). Counting a recipient's unread
-- notifications at every publish read one index entry and one row per unread notification, and read
-- them in the publishing statement's snapshot, which could miss another replica's concurrent write
-- to the same user. Now `user_sequences.unread` is kept by triggers in the same transaction as each
-- change; a publish reads it from the row it updates anyway (under that row's lock, so the latest
-- committed value), and a count subtracts only the unread notifications past their expiry, found
-- through a partial index that holds only unread notifications with an expiry.
--
-- Triggers rather than the publish statement, so that replicas still running the previous version
-- during a rolling upgrade keep the count too. The backfill reads every unread notification once.
ALTER TABLE user_sequences ADD COLUMN unread BIGINT NOT NULL DEFAULT 0;
UPDATE user_sequences s SET unread = (
  SELECT count(*) FROM notifications n WHERE n.user_id = s.user_id AND n.read_at IS NULL
);

CREATE FUNCTION herald_count_unread_added() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  UPDATE user_sequences s SET unread = s.unread + added.n
  FROM (SELECT user_id, count(*) AS n FROM inserted WHERE read_at IS NULL GROUP BY user_id) added
  WHERE s.user_id = added.user_id;
  RETURN NULL;
END
$$;

CREATE TRIGGER notifications_unread_added AFTER INSERT ON notifications
  REFERENCING NEW TABLE AS inserted
  FOR EACH STATEMENT EXECUTE FUNCTION herald_count_unread_added();

-- Read marks and deletes: the version (unread_removals) as before, and now the count.
CREATE OR REPLACE FUNCTION herald_count_unread_removal() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'DELETE' THEN
    UPDATE user_sequences SET unread_removals = unread_removals + 1, unread = unread - 1
    WHERE user_id = OLD.user_id;
  ELSE
    UPDATE user_sequences
    SET unread_removals = unread_removals + 1,
        unread = unread + (NEW.read_at IS NULL)::int - (OLD.read_at IS NULL)::int
    WHERE user_id = NEW.user_id;
  END IF;
  RETURN NULL;
END
$$;

-- idx_notifications_user_seq (user_id, seq) serves every lookup by user; these two were one page
-- written each per insert.
DROP INDEX idx_notifications_user_unread;
DROP INDEX idx_notifications_user_id;
CREATE INDEX idx_notifications_user_expiring_unread ON notifications (user_id, expires_at)
  WHERE read_at IS NULL AND expires_at IS NOT NULL;
