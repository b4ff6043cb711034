-- A counter per repository that changes whenever any of its tags does, so a
-- listing can be cached and revalidated with one tiny query (also across
-- replicas sharing the database). Kept by triggers, so no writer can forget it.
ALTER TABLE repositories ADD COLUMN tags_version INTEGER NOT NULL DEFAULT 0;

CREATE TRIGGER tags_version_insert AFTER INSERT ON tags BEGIN
    UPDATE repositories SET tags_version = tags_version + 1 WHERE id = NEW.repository_id;
END;
CREATE TRIGGER tags_version_update AFTER UPDATE ON tags BEGIN
    UPDATE repositories SET tags_version = tags_version + 1 WHERE id = NEW.repository_id;
END;
CREATE TRIGGER tags_version_delete AFTER DELETE ON tags BEGIN
    UPDATE repositories SET tags_version = tags_version + 1 WHERE id = OLD.repository_id;
END;
