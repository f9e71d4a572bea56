-- Every commit writes each page it changed to the WAL in full, so each b-tree an insert touches
-- costs a page write per commit (measured: 14 writes per notification, docs/benchmarks.md).
--
-- idx_notifications_user_seq (user_id, seq) serves every lookup by user_id; an index on user_id
-- alone was one more page per insert.
DROP INDEX IF EXISTS idx_notifications_user_id;

-- user_sequences without a hidden rowid: its primary key is the table, one b-tree instead of two,
-- and the trigger updates the row in place instead of deleting and inserting it (INSERT OR REPLACE).
DROP TRIGGER notifications_record_user_sequence;

CREATE TABLE user_sequences_keyed (
  user_id  TEXT PRIMARY KEY NOT NULL,
  last_seq INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO user_sequences_keyed (user_id, last_seq) SELECT user_id, last_seq FROM user_sequences;
DROP TABLE user_sequences;
ALTER TABLE user_sequences_keyed RENAME TO user_sequences;

CREATE TRIGGER notifications_record_user_sequence AFTER INSERT ON notifications
BEGIN
  INSERT INTO user_sequences (user_id, last_seq) VALUES (NEW.user_id, NEW.seq)
  ON CONFLICT (user_id) DO UPDATE SET last_seq = MAX(last_seq, excluded.last_seq);
END;
