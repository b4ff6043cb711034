-- A counter per repository that changes whenever any of its tags does, so a
-- listing can be cached and revalidated with one tiny query, also across
-- replicas sharing the database. Kept by a trigger, so no writer can forget it.
ALTER TABLE repositories ADD COLUMN tags_version BIGINT NOT NULL DEFAULT 0;

CREATE FUNCTION tags_version_bump() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        UPDATE repositories SET tags_version = tags_version + 1 WHERE id = OLD.repository_id;
    ELSE
        UPDATE repositories SET tags_version = tags_version + 1 WHERE id = NEW.repository_id;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER tags_version_insert AFTER INSERT ON tags
    FOR EACH ROW EXECUTE FUNCTION tags_version_bump();
CREATE TRIGGER tags_version_update AFTER UPDATE ON tags
    FOR EACH ROW EXECUTE FUNCTION tags_version_bump();
CREATE TRIGGER tags_version_delete AFTER DELETE ON tags
    FOR EACH ROW EXECUTE FUNCTION tags_version_bump();
