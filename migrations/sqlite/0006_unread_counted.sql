-- Unread counts kept, not counted. Counting a recipient's unread notifications at every publish
-- read one index entry and one row per unread notification (a user with thousands unread made every
-- publish to them that much slower), and the partial index it read was one more page written per
-- insert. Now `user_sequences.unread` is kept by the triggers below, in the same transaction as the
-- change; a count subtracts only the unread notifications past their expiry, found through a partial
-- index that holds only unread notifications with an expiry (most have none).
ALTER TABLE user_sequences ADD COLUMN unread INTEGER NOT NULL DEFAULT 0;
UPDATE user_sequences SET unread = (
  SELECT COUNT(*) FROM notifications n WHERE n.user_id = user_sequences.user_id AND n.read_at IS NULL
);

DROP TRIGGER notifications_record_user_sequence;
CREATE TRIGGER notifications_record_user_sequence AFTER INSERT ON notifications
BEGIN
  INSERT INTO user_sequences (user_id, last_seq, unread) VALUES (NEW.user_id, NEW.seq, NEW.read_at IS NULL)
  ON CONFLICT (user_id) DO UPDATE SET last_seq = MAX(last_seq, excluded.last_seq), unread = unread + excluded.unread;
END;

DROP TRIGGER notifications_unread_removed_by_read;
CREATE TRIGGER notifications_unread_removed_by_read AFTER UPDATE OF read_at ON notifications
WHEN OLD.read_at IS NOT NEW.read_at
BEGIN
  UPDATE user_sequences
  SET unread_removals = unread_removals + 1, unread = unread + (NEW.read_at IS NULL) - (OLD.read_at IS NULL)
  WHERE user_id = NEW.user_id;
END;

DROP TRIGGER notifications_unread_removed_by_delete;
CREATE TRIGGER notifications_unread_removed_by_delete AFTER DELETE ON notifications
WHEN OLD.read_at IS NULL
BEGIN
  UPDATE user_sequences SET unread_removals = unread_removals + 1, unread = unread - 1 WHERE user_id = OLD.user_id;
END;

DROP INDEX idx_notifications_user_unread;
CREATE INDEX idx_notifications_user_expiring_unread ON notifications (user_id, expires_at)
  WHERE read_at IS NULL AND expires_at IS NOT NULL;
