-- Unread counts travel to clients by several paths (the publish's own fan-out, the announcement after
-- a read mark or a delete, on any replica) and may arrive out of order. Each count is therefore sent
-- with a version of the user's unread set, `last_seq + unread_removals`: a publish raises `last_seq`,
-- every read mark or delete of an unread notification raises `unread_removals` in the same
-- transaction (these triggers), so the version grows with every change and a replica drops a count
-- older than one it already sent. Publishes, the hot path, are untouched.
ALTER TABLE user_sequences ADD COLUMN unread_removals BIGINT NOT NULL DEFAULT 0;

CREATE FUNCTION herald_count_unread_removal() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  UPDATE user_sequences SET unread_removals = unread_removals + 1 WHERE user_id = OLD.user_id;
  RETURN NULL;
END
$$;

CREATE TRIGGER notifications_unread_removed_by_read AFTER UPDATE OF read_at ON notifications
  FOR EACH ROW WHEN (OLD.read_at IS DISTINCT FROM NEW.read_at)
  EXECUTE FUNCTION herald_count_unread_removal();

CREATE TRIGGER notifications_unread_removed_by_delete AFTER DELETE ON notifications
  FOR EACH ROW WHEN (OLD.read_at IS NULL)
  EXECUTE FUNCTION herald_count_unread_removal();
