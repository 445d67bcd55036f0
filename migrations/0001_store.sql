-- govshare schema 1: the shared store.
--
-- Every ordered tree the planes above use (records and their indexes, the
-- control plane, quota counters) is a range of one table, keyed as the
-- embedded sled store keys it. bytea compares byte by byte, so a range scan
-- here returns keys in the same order sled does.
CREATE TABLE kv (
    tree  text  NOT NULL,
    key   bytea NOT NULL,
    value bytea NOT NULL,
    PRIMARY KEY (tree, key)
);
