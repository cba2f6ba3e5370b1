-- Every statement the PostgreSQL store runs. Named blocks; {schema} is composed as an
-- identifier by psycopg.sql, values are bound parameters only.
-- {now} is the store's clock: the bound %(now)s when a test gives one, else the time the
-- statement started (`statement_timestamp()`, one value for every row of the statement, and
-- stable, so it can bound an index scan). Every lease, due time and expiry is judged by it.

-- name: store_time
SELECT extract(epoch FROM clock_timestamp())::float8 AS now;

-- name: meta_create
CREATE TABLE IF NOT EXISTS {schema}.meta (key text PRIMARY KEY, value text NOT NULL);

-- name: schema_create
CREATE SCHEMA IF NOT EXISTS {schema};

-- name: migrate_lock
SELECT pg_advisory_xact_lock(hashtext(%(lock)s));

-- name: meta_get
SELECT value FROM {schema}.meta WHERE key = %(key)s;

-- name: meta_set
INSERT INTO {schema}.meta (key, value) VALUES (%(key)s, %(value)s)
ON CONFLICT (key) DO UPDATE SET value = excluded.value;

-- name: job_insert_many
-- The batch arrives as one JSON array (encoded in C by orjson) and is unpacked here: far
-- cheaper than binding one array parameter per column. Due times are the store's: enqueued
-- at {now}, due at an absolute run_at as given, else {now} plus the job's delay (NewJob.due).
WITH new AS (
    SELECT t.*, {now} AS at,
           CASE WHEN t.absolute THEN t.run_at ELSE {now} + (t.run_at - t.enqueued_at) END AS due
    FROM json_to_recordset(%(rows)s::json) AS t(
        id text, task text, queue text, data jsonb, priority int, run_at float8,
        max_attempts int, key text, timeout float8, backoff jsonb, enqueued_at float8,
        absolute bool, ord int, custom bool)
)
INSERT INTO {schema}.jobs
    (id, task, queue, state, data, priority, run_at, max_attempts, key, timeout, backoff,
     enqueued_at)
SELECT id, task, queue, CASE WHEN due > at THEN 'scheduled' ELSE 'queued' END, data,
       priority, due, max_attempts, key, timeout, backoff, at
FROM new
-- Only an id the caller chose can name a finished job (CASE: the probe runs for those only).
WHERE CASE WHEN custom THEN NOT EXISTS (SELECT 1 FROM {schema}.jobs_done d WHERE d.id = new.id)
           ELSE true END
ORDER BY ord
ON CONFLICT DO NOTHING
RETURNING id, enqueued_at;

-- name: queue_touch_many
INSERT INTO {schema}.queues (name)
SELECT DISTINCT q FROM unnest(%(queues)s::text[]) AS q
WHERE NOT EXISTS (SELECT 1 FROM {schema}.queues WHERE name = q)
ON CONFLICT (name) DO NOTHING;

-- name: notify
SELECT pg_notify(%(channel)s, q) FROM unnest(%(queues)s::text[]) AS q;

-- name: job_get
SELECT * FROM {schema}.jobs WHERE id = %(id)s
UNION ALL
SELECT * FROM {schema}.jobs_done WHERE id = %(id)s;

-- name: job_existing_many
-- For batch jobs that were not inserted, the job that holds the id (pending, active or
-- finished) or the (queue, key); `for_id` names the batch job.
SELECT DISTINCT ON (w.id) w.id AS for_id, j.*
FROM unnest(%(ids)s::text[], %(queues)s::text[], %(keys)s::text[]) AS w(id, queue, key)
CROSS JOIN LATERAL (
    SELECT *, 0 AS pref FROM {schema}.jobs WHERE id = w.id
    UNION ALL
    SELECT *, 1 FROM {schema}.jobs_done WHERE id = w.id
    UNION ALL
    SELECT *, 2 FROM {schema}.jobs WHERE w.key IS NOT NULL AND queue = w.queue AND key = w.key
) AS j
ORDER BY w.id, j.pref;

-- name: job_list
SELECT * FROM (
    (SELECT * FROM {schema}.jobs
     WHERE (%(queue)s::text IS NULL OR queue = %(queue)s)
       AND (%(state)s::text IS NULL OR state = %(state)s)
       AND (%(task)s::text IS NULL OR task = %(task)s)
       AND (%(before_id)s::text IS NULL OR id < %(before_id)s)
     ORDER BY id DESC LIMIT %(limit)s)
    UNION ALL
    (SELECT * FROM {schema}.jobs_done
     WHERE (%(queue)s::text IS NULL OR queue = %(queue)s)
       AND (%(state)s::text IS NULL OR state = %(state)s)
       AND (%(task)s::text IS NULL OR task = %(task)s)
       AND (%(before_id)s::text IS NULL OR id < %(before_id)s)
     ORDER BY id DESC LIMIT %(limit)s)
) AS j
ORDER BY id DESC
LIMIT %(limit)s;

-- name: job_claim
WITH candidates AS (
    SELECT c.id, c.priority, c.run_at
    FROM unnest(%(queues)s::text[]) AS q(name)
    CROSS JOIN LATERAL (
        SELECT id, priority, run_at FROM {schema}.jobs
        WHERE queue = q.name AND state IN ('queued', 'scheduled') AND run_at <= {now}
        ORDER BY priority, run_at, id
        LIMIT %(limit)s
        FOR UPDATE SKIP LOCKED
    ) AS c
    WHERE q.name NOT IN (SELECT name FROM {schema}.queues WHERE paused)
    ORDER BY c.priority, c.run_at, c.id
    LIMIT %(limit)s
)
UPDATE {schema}.jobs AS j
SET state = 'active', attempt = j.attempt + 1, worker_id = %(worker_id)s,
    started_at = {now}, lease_expires_at = {now} + %(lease_seconds)s
FROM candidates
WHERE j.id = candidates.id
RETURNING j.*;

-- Statements that change jobs' states return one row per change, the columns of a JobChange:
-- id, queue, task, state (the new one), attempt, at, run_at, started_at, finished_at.

-- name: job_finish_many
-- Completed, failed or cancelled attempts move to jobs_done in one statement. Rows whose
-- attempt is no longer this worker's are left alone. `only_if_cancel` rows move only when a
-- cancel was requested (a retry or snooze of a job cancelled meanwhile: it ends on no worker,
-- with the due time it asked for); a `snoozed` one does not count its attempt.
WITH o AS (
    SELECT * FROM unnest(
        %(ids)s::text[], %(attempts)s::int[], %(workers)s::text[], %(states)s::text[],
        %(results)s::text[], %(errors)s::text[], %(finished_ats)s::float8[],
        %(only_if_cancel)s::bool[], %(snoozed)s::bool[], %(run_ats)s::float8[],
        %(delays)s::float8[]
    ) AS t(id, attempt, worker_id, state, result, error, finished_at, only_if_cancel, snoozed,
           run_at, delay)
), moved AS (
    DELETE FROM {schema}.jobs AS j USING o
    WHERE j.id = o.id AND j.state = 'active' AND j.worker_id = o.worker_id
      AND j.attempt = o.attempt AND (NOT o.only_if_cancel OR j.cancel_requested)
    RETURNING j.*, o.state AS new_state, o.result AS new_result, o.error AS new_error,
              coalesce(o.finished_at, {now}) AS t, o.snoozed, o.only_if_cancel AS postponed,
              o.run_at AS new_run_at, o.delay
), done AS (
    INSERT INTO {schema}.jobs_done
    SELECT id, task, queue, new_state, data, priority,
           CASE WHEN postponed THEN coalesce(new_run_at, t + coalesce(delay, 0))
                ELSE run_at END,
           attempt - snoozed::int, max_attempts, key, timeout, backoff, progress,
           new_result::jsonb,
           CASE WHEN new_error IS NULL THEN errors
                ELSE errors || jsonb_build_array(new_error::jsonb) END,
           enqueued_at, CASE WHEN snoozed THEN NULL ELSE started_at END, t,
           CASE WHEN postponed THEN NULL ELSE worker_id END, NULL, cancel_requested,
           snoozes + snoozed::int
    FROM moved
)
SELECT id, queue, task, new_state AS state, attempt - snoozed::int AS attempt, t AS at,
       NULL::float8 AS run_at, started_at, t AS finished_at
FROM moved;

-- name: job_postpone_many
-- Retries (an error appended) and snoozes (the attempt not counted) due again at `run_at`,
-- else `delay` seconds after the finish time; a cancel requested meanwhile is left to
-- job_finish_many. The attempt's start is read before a snooze clears it.
WITH o AS (
    SELECT * FROM unnest(
        %(ids)s::text[], %(attempts)s::int[], %(workers)s::text[], %(errors)s::text[],
        %(finished_ats)s::float8[], %(run_ats)s::float8[], %(delays)s::float8[],
        %(snoozed)s::bool[]
    ) AS t(id, attempt, worker_id, error, finished_at, run_at, delay, snoozed)
), timed AS (
    SELECT o.*, j.started_at AS began, coalesce(o.finished_at, {now}) AS t
    FROM o JOIN {schema}.jobs AS j ON j.id = o.id
), p AS (
    SELECT timed.*, coalesce(timed.run_at, timed.t + coalesce(timed.delay, 0)) AS due
    FROM timed
)
UPDATE {schema}.jobs AS j
SET state = CASE WHEN p.due > p.t THEN 'scheduled' ELSE 'queued' END,
    run_at = p.due,
    errors = CASE WHEN p.error IS NULL THEN j.errors
                  ELSE j.errors || jsonb_build_array(p.error::jsonb) END,
    attempt = j.attempt - p.snoozed::int, snoozes = j.snoozes + p.snoozed::int,
    started_at = CASE WHEN p.snoozed THEN NULL ELSE j.started_at END,
    worker_id = NULL, lease_expires_at = NULL
FROM p
WHERE j.id = p.id AND j.state = 'active' AND j.worker_id = p.worker_id
  AND j.attempt = p.attempt AND NOT j.cancel_requested
RETURNING j.id, j.queue, j.task, j.state, j.attempt, p.t AS at, j.run_at,
          p.began AS started_at, NULL::float8 AS finished_at;

-- name: job_lock
-- Locks one worker's rows in id order before a statement that changes several of them: its
-- heartbeat, acknowledgement and release connections then all wait in the same order and
-- never deadlock one another (an UPDATE or DELETE alone locks in whatever order its plan
-- happens to scan).
-- Only active rows: a claim skips locked rows, so queued ones must never be held here.
SELECT id FROM {schema}.jobs
WHERE id = ANY(%(ids)s::text[]) AND state = 'active'
ORDER BY id FOR UPDATE;

-- name: job_lock_expired
-- The rows a rescue is about to change, locked in id order (see job_lock), with the time
-- the rescue then judges by (the same for its next statements).
SELECT id, {now} AS now FROM {schema}.jobs
WHERE state = 'active' AND lease_expires_at < {now}
ORDER BY id FOR UPDATE;

-- name: job_heartbeat
UPDATE {schema}.jobs
SET lease_expires_at = {now} + %(lease_seconds)s
WHERE id = ANY(%(ids)s::text[]) AND state = 'active' AND worker_id = %(worker_id)s
RETURNING id, cancel_requested;

-- name: job_release_cancelled
-- Releases name no `started_at`: the handler never started, the attempt does not count.
WITH moved AS (
    DELETE FROM {schema}.jobs
    WHERE id = ANY(%(ids)s::text[]) AND state = 'active' AND worker_id = %(worker_id)s
      AND cancel_requested
    RETURNING *, {now} AS t
), done AS (
    INSERT INTO {schema}.jobs_done
    SELECT id, task, queue, 'cancelled', data, priority, t, attempt - 1, max_attempts,
           key, timeout, backoff, progress, result, errors, enqueued_at, NULL, t, NULL, NULL,
           cancel_requested, snoozes
    FROM moved
)
SELECT id, queue, task, 'cancelled' AS state, attempt - 1 AS attempt, t AS at,
       NULL::float8 AS run_at, NULL::float8 AS started_at, t AS finished_at
FROM moved;

-- name: job_release
UPDATE {schema}.jobs
SET state = 'queued', attempt = attempt - 1, worker_id = NULL, lease_expires_at = NULL,
    started_at = NULL, run_at = {now}
WHERE id = ANY(%(ids)s::text[]) AND state = 'active' AND worker_id = %(worker_id)s
RETURNING id, queue, task, state, attempt, run_at AS at, run_at, started_at,
          NULL::float8 AS finished_at;

-- name: job_rescue_finish
WITH moved AS (
    DELETE FROM {schema}.jobs
    WHERE state = 'active' AND lease_expires_at < {now}
      AND (cancel_requested OR attempt >= max_attempts)
    RETURNING *, {now} AS t,
              CASE WHEN cancel_requested THEN 'cancelled' ELSE 'failed' END AS new_state
), done AS (
    INSERT INTO {schema}.jobs_done
    SELECT id, task, queue, new_state, data, priority, t, attempt, max_attempts, key,
           timeout, backoff, progress, result,
           errors || jsonb_build_array(jsonb_build_object(
               'attempt', attempt, 'at', t,
               'error', 'worker lost: lease expired before the attempt finished',
               'traceback', NULL)),
           enqueued_at, started_at, t, NULL, NULL, cancel_requested, snoozes
    FROM moved
)
SELECT id, queue, task, new_state AS state, attempt, t AS at, NULL::float8 AS run_at,
       started_at, t AS finished_at
FROM moved;

-- name: job_rescue_requeue
UPDATE {schema}.jobs
SET state = 'queued', run_at = {now}, worker_id = NULL, lease_expires_at = NULL,
    errors = errors || jsonb_build_array(jsonb_build_object(
        'attempt', attempt, 'at', {now},
        'error', 'worker lost: lease expired before the attempt finished',
        'traceback', NULL))
WHERE state = 'active' AND lease_expires_at < {now}
RETURNING id, queue, task, state, attempt, run_at AS at, run_at, started_at,
          NULL::float8 AS finished_at;

-- name: job_cancel_pending
WITH moved AS (
    DELETE FROM {schema}.jobs
    WHERE id = %(id)s AND state IN ('scheduled', 'queued', 'blocked')
    RETURNING *, {now} AS t
), done AS (
    INSERT INTO {schema}.jobs_done
    SELECT id, task, queue, 'cancelled', data, priority, run_at, attempt, max_attempts, key,
           timeout, backoff, progress, result, errors, enqueued_at, started_at, t,
           worker_id, NULL, cancel_requested, snoozes
    FROM moved
    RETURNING *
)
SELECT done.*, moved.state AS from_state, moved.t AS at
FROM done JOIN moved ON moved.id = done.id;

-- name: job_cancel_request
UPDATE {schema}.jobs SET cancel_requested = true
WHERE id = %(id)s AND state = 'active'
RETURNING *, state AS from_state, {now} AS at;

-- name: job_retry_manual
WITH moved AS (
    DELETE FROM {schema}.jobs_done
    WHERE id = %(id)s AND state IN ('failed', 'cancelled')
    RETURNING *, {now} AS t
), back AS (
    INSERT INTO {schema}.jobs
    SELECT id, task, queue, 'queued', data, priority, t, attempt,
           greatest(max_attempts, attempt + 1), key, timeout, backoff, progress, NULL, errors,
           enqueued_at, started_at, NULL, NULL, NULL, false, snoozes
    FROM moved
    RETURNING *
)
SELECT back.*, moved.state AS from_state, moved.t AS at
FROM back JOIN moved ON moved.id = back.id;

-- name: job_set_progress
UPDATE {schema}.jobs SET progress = %(progress)s::jsonb
WHERE id = %(id)s AND attempt = %(attempt)s AND state = 'active';

-- name: job_prune
-- At most `limit` rows, oldest first (the index on finished_at), so no statement runs long.
DELETE FROM {schema}.jobs_done
WHERE id IN (
    SELECT id FROM {schema}.jobs_done
    WHERE finished_at < {now} - least(%(keep_completed)s::float8, %(keep_failed)s::float8)
      AND ((state = 'completed' AND finished_at < {now} - %(keep_completed)s::float8)
           OR (state IN ('failed', 'cancelled')
               AND finished_at < {now} - %(keep_failed)s::float8))
    ORDER BY finished_at
    LIMIT %(limit)s
);

-- name: job_next_due_in
SELECT min(run_at) - {now} AS due_in FROM {schema}.jobs
WHERE state = 'scheduled' AND queue = ANY(%(queues)s::text[])
  AND queue NOT IN (SELECT name FROM {schema}.queues WHERE paused);

-- name: compact_try_lock
SELECT pg_try_advisory_lock(hashtext(%(lock)s));

-- name: compact_jobs
VACUUM (ANALYZE) {schema}.jobs;

-- name: queue_set_paused
INSERT INTO {schema}.queues (name, paused) VALUES (%(name)s, %(paused)s)
ON CONFLICT (name) DO UPDATE SET paused = excluded.paused;

-- name: queue_names
SELECT name FROM {schema}.queues;

-- name: queue_list
SELECT name, paused FROM {schema}.queues
WHERE %(name)s::text IS NULL OR name = %(name)s
ORDER BY name;

-- name: queue_counts
SELECT queue,
       CASE WHEN state = 'scheduled' AND run_at <= {now} THEN 'queued' ELSE state END AS st,
       count(*) AS n
FROM {schema}.jobs
WHERE %(name)s::text IS NULL OR queue = %(name)s
GROUP BY 1, 2
UNION ALL
SELECT queue, state, count(*)
FROM {schema}.jobs_done
WHERE %(name)s::text IS NULL OR queue = %(name)s
GROUP BY 1, 2;

-- name: queue_oldest_queued
SELECT queue, min(run_at) AS oldest FROM {schema}.jobs
WHERE state IN ('queued', 'scheduled') AND run_at <= {now}
  AND (%(name)s::text IS NULL OR queue = %(name)s)
GROUP BY queue;

-- name: queue_recent
SELECT queue,
       count(*) FILTER (WHERE state = 'completed' AND finished_at >= {now} - 60)
           AS completed_last_minute,
       count(*) FILTER (WHERE state = 'failed' AND finished_at >= {now} - 60)
           AS failed_last_minute,
       avg(started_at - run_at) AS avg_wait,
       avg(finished_at - started_at) AS avg_run
FROM {schema}.jobs_done
WHERE state IN ('completed', 'failed') AND finished_at >= {now} - 3600
  AND (%(name)s::text IS NULL OR queue = %(name)s)
GROUP BY queue;

-- name: worker_beat
-- Stamped with the store's time (the entry's own heartbeat_at is replaced by it).
INSERT INTO {schema}.workers (id, info, heartbeat_at, expires_at)
SELECT %(id)s, %(info)s::jsonb || jsonb_build_object('heartbeat_at', t), t, t + %(ttl)s
FROM (SELECT {now} AS t) AS clock
ON CONFLICT (id) DO UPDATE SET
    info = excluded.info, heartbeat_at = excluded.heartbeat_at, expires_at = excluded.expires_at;

-- name: worker_list
-- As text: every store parses the entry with the same helper.
SELECT info::text AS info FROM {schema}.workers WHERE expires_at > {now};

-- name: worker_forget
DELETE FROM {schema}.workers WHERE id = %(id)s;

-- name: worker_prune
DELETE FROM {schema}.workers WHERE expires_at <= {now};

-- name: leader_elect
-- Take the lease if it is free or expired, or renew it for its holder; a row back means
-- `holder` leads.
INSERT INTO {schema}.conveyor_leaders AS l (name, holder, expires_at)
VALUES (%(name)s, %(holder)s, {now} + %(ttl)s)
ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
WHERE l.holder = excluded.holder OR l.expires_at <= {now}
RETURNING holder;

-- name: leader_resign
DELETE FROM {schema}.conveyor_leaders WHERE name = %(name)s AND holder = %(holder)s;

-- name: leader_get
SELECT holder FROM {schema}.conveyor_leaders WHERE name = %(name)s AND expires_at > {now};
