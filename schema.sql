-- Caravanserai database schema. Applied at every server start by
-- caravanserai.store.schema.apply_schema inside one transaction holding
-- pg_advisory_xact_lock, so it must stay idempotent (IF NOT EXISTS / ON CONFLICT) and
-- two processes applying it at once simply run one after the other.

-- The global revision. Exactly one row. Every write transaction increments it as its
-- last step before COMMIT (UPDATE ... SET rev = rev + 1 RETURNING rev): the row lock
-- serialises writers from that point until commit, so revision order equals commit order
-- and a rolled-back write gives its number back (no gaps). See store/postgres.py.
CREATE TABLE IF NOT EXISTS cara_revision (
    id  boolean PRIMARY KEY DEFAULT true CHECK (id),
    rev bigint  NOT NULL
);
INSERT INTO cara_revision (id, rev) VALUES (true, 0) ON CONFLICT (id) DO NOTHING;

-- The highest revision removed from the event log by compaction. Kept apart from the
-- counter row so compaction never waits behind (or blocks) writers holding the counter.
CREATE TABLE IF NOT EXISTS cara_compaction (
    id        boolean PRIMARY KEY DEFAULT true CHECK (id),
    revision  bigint      NOT NULL,
    compacted_at timestamptz
);
INSERT INTO cara_compaction (id, revision) VALUES (true, 0) ON CONFLICT (id) DO NOTHING;

-- Current objects, keyed (kind, name), the full wire (camelCase JSON) form in `object`.
-- Kinds: Project, Node (caravanserai.api.resources.KINDS) and Lease (leader election's
-- lock, /api/v1/leases: spec.holderIdentity, leaseDurationSeconds, acquireTime, renewTime,
-- leaseTransitions). A Lease is an object like the others so it shares the revision, the
-- event log, watch and resourceVersion preconditions; the older cara_leases table, written
-- directly by the leader elector before Leases were API objects, is no longer used.
-- Events (/api/v1/events: what happened to an object) are objects of kind Event too; their
-- field selectors (involvedObject.kind/name) read `object`, as Events are listed per object
-- rarely enough and expire after an hour (event-ttl), so no promoted column is needed.
-- Promoted columns exist only for filtering in SQL; `object` is the truth.
-- name uses the "C" collation so ORDER BY name / name > $last agree with Python's str
-- ordering whatever the cluster locale (pagination depends on it).
CREATE TABLE IF NOT EXISTS cara_objects (
    kind      text            NOT NULL,
    name      text COLLATE "C" NOT NULL,
    revision  bigint          NOT NULL,
    uid       uuid            NOT NULL,
    phase     text,            -- status.phase (Projects)
    state     text,            -- status.state (Nodes)
    node_ref  text,            -- status.nodeRef
    labels    jsonb           NOT NULL DEFAULT '{}'::jsonb,
    object    jsonb           NOT NULL,
    PRIMARY KEY (kind, name)
);
CREATE INDEX IF NOT EXISTS cara_objects_phase_idx ON cara_objects (kind, phase);
CREATE INDEX IF NOT EXISTS cara_objects_state_idx ON cara_objects (kind, state);
CREATE INDEX IF NOT EXISTS cara_objects_node_ref_idx ON cara_objects (kind, node_ref);
CREATE INDEX IF NOT EXISTS cara_objects_labels_idx ON cara_objects USING gin (labels);

-- The event log: one row per committed write, dense in revision (no gaps, see above).
-- old_object is the state before the write (NULL for ADDED): watch filtering turns
-- "starts/stops matching" into ADDED/DELETED with it, and paginated lists use it to see
-- an object as of an earlier revision.
CREATE TABLE IF NOT EXISTS cara_events (
    revision   bigint           PRIMARY KEY,
    kind       text             NOT NULL,
    name       text COLLATE "C" NOT NULL,
    type       text             NOT NULL CHECK (type IN ('ADDED', 'MODIFIED', 'DELETED')),
    object     jsonb            NOT NULL,
    old_object jsonb,
    created_at timestamptz      NOT NULL DEFAULT now()
);
-- For paginated lists: "the first event after revision R for each name in a range".
CREATE INDEX IF NOT EXISTS cara_events_kind_name_idx ON cara_events (kind, name, revision);

-- API credentials (issue 11). Only a SHA-256 digest of each token is kept: tokens are 256
-- random bits, so a fast hash is enough (nothing to brute-force) and the table leaks nothing.
-- role: view / edit / admin (users), join (may exchange itself for a node credential), node
-- (bound to `node`). agent_secret is the per-node secret the server's relay presents to that
-- node's agent (the agent holds it; it is not a credential for this API).
CREATE TABLE IF NOT EXISTS cara_tokens (
    name         text COLLATE "C" PRIMARY KEY,
    role         text        NOT NULL CHECK (role IN ('view', 'edit', 'admin', 'join', 'node')),
    digest       bytea       NOT NULL UNIQUE,
    node         text,
    agent_secret text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz,
    CHECK ((role = 'node') = (node IS NOT NULL))
);
CREATE UNIQUE INDEX IF NOT EXISTS cara_tokens_node_idx ON cara_tokens (node) WHERE node IS NOT NULL;

-- Node heartbeats (the node lease of Kubernetes' KEP-589). An agent's heartbeat that changes
-- nothing in its Node renews this row only: one statement, outside the revision counter and
-- the event log, so it neither queues behind the writers' row lock nor wakes a watch.
-- status.lastHeartbeat in the Node object is rewritten only with a status change or when it
-- is older than a minute (registry/nodes.py); node-health reads this row before it declares
-- a node silent. A row outlives its node only until the node is deleted (the registry
-- removes it) and is never read without the node.
CREATE TABLE IF NOT EXISTS cara_node_leases (
    name       text COLLATE "C" PRIMARY KEY,
    renewed_at timestamptz NOT NULL
);
