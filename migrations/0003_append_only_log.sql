-- govshare schema 3: the shared audit log refuses to be rewritten.
--
-- Nodes only ever insert entries and move the head forward. A statement
-- that would change or remove an acknowledged entry — a mistaken script,
-- an injected query, a node of a buggy build — is refused by the database
-- itself, with a message that says so. The owner of these tables can still
-- disable the triggers; that is for saved checkpoints, the witnesses and
-- any freshly built replica to catch (docs/threat-model.md).
CREATE FUNCTION govshare_refuse_rewrite() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit log is append-only: % on % is refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER audit_entries_append_only
    BEFORE UPDATE OR DELETE ON audit_entries
    FOR EACH ROW EXECUTE FUNCTION govshare_refuse_rewrite();
CREATE TRIGGER audit_entries_no_truncate
    BEFORE TRUNCATE ON audit_entries
    FOR EACH STATEMENT EXECUTE FUNCTION govshare_refuse_rewrite();

-- The head only grows, and an entry it covers keeps its leaf hash.
CREATE FUNCTION govshare_head_moves_forward() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.size < OLD.size
       OR (NEW.size = OLD.size AND NEW.last_leaf IS DISTINCT FROM OLD.last_leaf) THEN
        RAISE EXCEPTION 'the audit log is append-only: its head may not move back from % to % entries',
            OLD.size, NEW.size
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER audit_head_forward_only
    BEFORE UPDATE ON audit_head
    FOR EACH ROW EXECUTE FUNCTION govshare_head_moves_forward();
CREATE TRIGGER audit_head_stays
    BEFORE DELETE ON audit_head
    FOR EACH ROW EXECUTE FUNCTION govshare_refuse_rewrite();
CREATE TRIGGER audit_head_no_truncate
    BEFORE TRUNCATE ON audit_head
    FOR EACH STATEMENT EXECUTE FUNCTION govshare_refuse_rewrite();
