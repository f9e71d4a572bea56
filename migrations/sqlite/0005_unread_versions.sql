-- Unread counts travel to clients by several paths (the publish's own fan-out, the announcement after
-- a read mark or a delete) and may arrive out of order. Each count is therefore sent with a version
-- of the user's unread set, `last_seq + unread_removals`: a publish raises `last_seq`, every read mark
-- or delete of an unread notification raises `unread_removals` (in the same transaction, by these
-- triggers), so the version grows with every change and a replica drops a count older than one it
-- already sent. Publishes, the hot path, are untouched.
ALTER TABLE user_sequences ADD COLUMN unread_removals INTEGER NOT NULL DEFAULT 0;

CREATE TRIGGER notifications_unread_removed_by_read AFTER UPDATE OF read_at ON notifications
WHEN OLD.read_at IS NOT NEW.read_at
BEGIN
  UPDATE user_sequences SET unread_removals = unread_removals + 1 WHERE user_id = NEW.user_id;
END;

CREATE TRIGGER notifications_unread_removed_by_delete AFTER DELETE ON notifications
WHEN OLD.read_at IS NULL
BEGIN
  UPDATE user_sequences SET unread_removals = unread_removals + 1 WHERE user_id = OLD.user_id;
END;
