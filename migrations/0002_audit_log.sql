-- govshare schema 2: the cluster's one audit log.
--
-- Every node appends here; a node's data dir keeps only a replica (its
-- segments, index and tiles), rebuilt from these rows. One row sequences
-- the log: an append locks it, takes the next indexes and the previous
-- entry's leaf hash (the chain), inserts its entries and commits, so
-- indexes are dense and commit in index order across nodes.
CREATE TABLE audit_head (
    one       boolean PRIMARY KEY DEFAULT true CHECK (one),
    size      bigint  NOT NULL,
    last_leaf bytea
);
INSERT INTO audit_head (size) VALUES (0);

-- One encoded AuditEntry per index. Rows are only ever inserted.
CREATE TABLE audit_entries (
    idx   bigint PRIMARY KEY,
    entry bytea  NOT NULL
);
