-- A notification's `seq` is its user's next number. The insert computes it (one statement per
-- notification, where it used to take two), and this trigger records it as the user's last within
-- that same statement, so a failing insert bumps nothing.
CREATE TRIGGER notifications_record_user_sequence AFTER INSERT ON notifications
BEGIN
  INSERT OR REPLACE INTO user_sequences (user_id, last_seq)
  VALUES (NEW.user_id, MAX(NEW.seq, COALESCE((SELECT last_seq FROM user_sequences WHERE user_id = NEW.user_id), 0)));
END;
