-- Every statement the SQLite store runs. Named blocks, placeholders only.

-- name: meta_get
SELECT value FROM conveyor_meta WHERE key = ?;

-- name: meta_set
INSERT INTO conveyor_meta (key, value) VALUES (?, ?)
ON CONFLICT (key) DO UPDATE SET value = excluded.value;

-- name: job_insert
INSERT INTO conveyor_jobs
    (id, task, queue, state, data, priority, run_at, max_attempts, key, timeout, backoff,
     enqueued_at)
VALUES
    (:id, :task, :queue, :state, :data, :priority, :run_at, :max_attempts, :key, :timeout,
     :backoff, :enqueued_at)
ON CONFLICT DO NOTHING;

-- name: job_get
SELECT * FROM conveyor_jobs WHERE id = ?;

-- name: job_get_by_key
SELECT * FROM conveyor_jobs
WHERE queue = ? AND key = ? AND state IN ('scheduled', 'queued', 'active', 'blocked');

-- name: job_list
SELECT * FROM conveyor_jobs
WHERE (:queue IS NULL OR queue = :queue)
  AND (:state IS NULL OR state = :state)
  AND (:task IS NULL OR task = :task)
  AND (:before_id IS NULL OR id < :before_id)
ORDER BY id DESC
LIMIT :limit;

-- name: queue_touch
INSERT INTO conveyor_queues (name) VALUES (?) ON CONFLICT (name) DO NOTHING;

-- name: queues_paused
SELECT name FROM conveyor_queues WHERE paused = 1;

-- name: job_claim_candidates
SELECT priority, run_at, id FROM conveyor_jobs
WHERE queue = :queue AND state IN ('queued', 'scheduled') AND run_at <= :now
ORDER BY priority, run_at, id
LIMIT :limit;

-- name: job_claim
UPDATE conveyor_jobs
SET state = 'active', attempt = attempt + 1, worker_id = :worker_id, started_at = :now,
    lease_expires_at = :lease_expires_at
WHERE id IN (SELECT value FROM json_each(:ids)) AND state IN ('queued', 'scheduled')
RETURNING *;

-- name: job_complete_many
-- Every outcome of a batch in one statement. :outcomes is a JSON array of
-- [id, worker_id, attempt, kind, finished_at, run_at, delay, result, error]: finished_at null
-- means :now (the store's clock), run_at null means finished_at + delay (retry, snooze),
-- result and error are JSON text. A stale outcome (no longer this worker's attempt) matches
-- no row; each applied one returns the job's row after it, for its JobChange. A snooze
-- clears the attempt's start, which RETURNING cannot show: it is read first (job_started_at).
WITH o AS (
    SELECT json_extract(value, '$[0]') AS id,
           json_extract(value, '$[1]') AS worker_id,
           json_extract(value, '$[2]') AS attempt,
           json_extract(value, '$[3]') AS kind,
           coalesce(json_extract(value, '$[4]'), :now) AS finished_at,
           coalesce(json_extract(value, '$[5]'),
                    coalesce(json_extract(value, '$[4]'), :now) + json_extract(value, '$[6]'))
               AS run_at,
           json_extract(value, '$[7]') AS result,
           json_extract(value, '$[8]') AS error
    FROM json_each(:outcomes))
UPDATE conveyor_jobs
SET state = CASE
        WHEN o.kind IN ('completed', 'failed', 'cancelled') THEN o.kind
        WHEN cancel_requested THEN 'cancelled'
        WHEN o.run_at > o.finished_at THEN 'scheduled'
        ELSE 'queued' END,
    finished_at = CASE
        WHEN o.kind IN ('completed', 'failed', 'cancelled') OR cancel_requested
        THEN o.finished_at END,
    result = CASE WHEN o.kind = 'completed' THEN o.result ELSE conveyor_jobs.result END,
    errors = CASE WHEN o.error IS NULL THEN errors
                  ELSE json_insert(errors, '$[#]', json(o.error)) END,
    run_at = CASE WHEN o.kind IN ('retry', 'snooze') THEN o.run_at ELSE conveyor_jobs.run_at END,
    attempt = conveyor_jobs.attempt - (o.kind = 'snooze'),
    snoozes = snoozes + (o.kind = 'snooze'),
    worker_id = CASE WHEN o.kind IN ('retry', 'snooze') THEN NULL ELSE conveyor_jobs.worker_id END,
    started_at = CASE WHEN o.kind = 'snooze' THEN NULL ELSE started_at END,
    lease_expires_at = NULL
FROM o
WHERE conveyor_jobs.id = o.id AND state = 'active' AND conveyor_jobs.worker_id = o.worker_id
  AND conveyor_jobs.attempt = o.attempt
RETURNING id, queue, task, state, attempt, run_at, started_at;

-- name: job_started_at
SELECT id, started_at FROM conveyor_jobs
WHERE id IN (SELECT value FROM json_each(:ids)) AND state = 'active';

-- name: job_heartbeat
UPDATE conveyor_jobs
SET lease_expires_at = :lease_expires_at
WHERE id IN (SELECT value FROM json_each(:ids)) AND state = 'active' AND worker_id = :worker_id
RETURNING id, cancel_requested;

-- name: job_release
UPDATE conveyor_jobs
SET state = CASE WHEN cancel_requested THEN 'cancelled' ELSE 'queued' END,
    finished_at = CASE WHEN cancel_requested THEN :now ELSE NULL END,
    attempt = attempt - 1, worker_id = NULL, lease_expires_at = NULL, started_at = NULL,
    run_at = :now
WHERE id IN (SELECT value FROM json_each(:ids)) AND state = 'active' AND worker_id = :worker_id
RETURNING id, queue, task, state, attempt, run_at;

-- name: job_rescue_expired
UPDATE conveyor_jobs
SET state = CASE
        WHEN cancel_requested THEN 'cancelled'
        WHEN attempt >= max_attempts THEN 'failed'
        ELSE 'queued' END,
    finished_at = CASE WHEN cancel_requested OR attempt >= max_attempts THEN :now ELSE NULL END,
    errors = json_insert(errors, '$[#]', json_object(
        'attempt', attempt, 'at', :now,
        'error', 'worker lost: lease expired before the attempt finished', 'traceback', NULL)),
    run_at = :now, worker_id = NULL, lease_expires_at = NULL
WHERE state = 'active' AND lease_expires_at < :now
RETURNING id, queue, task, state, attempt, run_at, started_at;

-- name: job_cancel_pending
UPDATE conveyor_jobs
SET state = 'cancelled', finished_at = :now
WHERE id = :id AND state IN ('scheduled', 'queued', 'blocked')
RETURNING *;

-- name: job_cancel_request
UPDATE conveyor_jobs SET cancel_requested = 1
WHERE id = :id AND state = 'active'
RETURNING *;

-- name: job_retry_manual
UPDATE conveyor_jobs
SET state = 'queued', run_at = :now, finished_at = NULL, result = NULL, worker_id = NULL,
    cancel_requested = 0, max_attempts = max(max_attempts, attempt + 1)
WHERE id = :id AND state IN ('failed', 'cancelled')
RETURNING *;

-- name: job_set_progress
UPDATE conveyor_jobs SET progress = :progress
WHERE id = :id AND attempt = :attempt AND state = 'active';

-- name: job_state
SELECT state FROM conveyor_jobs WHERE id = :id;

-- name: job_prune
-- At most :limit rows, so no delete runs long: per queue and finished state, a range seek
-- on conveyor_jobs_finished to the rows past their retention.
DELETE FROM conveyor_jobs
WHERE id IN (
    SELECT j.id
    FROM conveyor_queues AS q
    CROSS JOIN (SELECT 'completed' AS state, :completed_before AS before
                UNION ALL SELECT 'failed', :failed_before
                UNION ALL SELECT 'cancelled', :failed_before) AS s
    CROSS JOIN conveyor_jobs AS j
    WHERE j.queue = q.name AND j.state = s.state AND j.finished_at < s.before
      AND j.state IN ('completed', 'failed', 'cancelled')
    LIMIT :limit);

-- name: job_next_due_in
SELECT min(run_at) - :now FROM conveyor_jobs
WHERE state = 'scheduled' AND queue IN (SELECT value FROM json_each(:queues))
  AND queue NOT IN (SELECT name FROM conveyor_queues WHERE paused = 1);

-- name: queue_set_paused
INSERT INTO conveyor_queues (name, paused) VALUES (:name, :paused)
ON CONFLICT (name) DO UPDATE SET paused = excluded.paused;

-- name: queue_list
SELECT name, paused FROM conveyor_queues
WHERE :name IS NULL OR name = :name
ORDER BY name;

-- name: queue_counts
SELECT queue,
       CASE WHEN state = 'scheduled' AND run_at <= :now THEN 'queued' ELSE state END AS st,
       count(*) AS n
FROM conveyor_jobs
WHERE :name IS NULL OR queue = :name
GROUP BY 1, 2;

-- name: queue_oldest_queued
SELECT queue, min(run_at) AS oldest FROM conveyor_jobs
WHERE state IN ('queued', 'scheduled') AND run_at <= :now AND (:name IS NULL OR queue = :name)
GROUP BY queue;

-- name: queue_recent
SELECT queue,
       sum(state = 'completed' AND finished_at >= :minute_ago) AS completed_last_minute,
       sum(state = 'failed' AND finished_at >= :minute_ago) AS failed_last_minute,
       avg(started_at - run_at) AS avg_wait,
       avg(finished_at - started_at) AS avg_run
FROM conveyor_jobs
WHERE state IN ('completed', 'failed') AND finished_at >= :hour_ago
  AND (:name IS NULL OR queue = :name)
GROUP BY queue;

-- name: worker_beat
INSERT INTO conveyor_workers (id, info, heartbeat_at, expires_at)
VALUES (:id, :info, :heartbeat_at, :expires_at)
ON CONFLICT (id) DO UPDATE SET
    info = excluded.info, heartbeat_at = excluded.heartbeat_at, expires_at = excluded.expires_at;

-- name: worker_list
SELECT info FROM conveyor_workers WHERE expires_at > :now;

-- name: worker_forget
DELETE FROM conveyor_workers WHERE id = :id;

-- name: worker_prune
DELETE FROM conveyor_workers WHERE expires_at <= :now;

-- name: leader_elect
-- Take a free or expired lease, or renew our own; no row returned: someone else leads.
INSERT INTO conveyor_leaders (name, holder, expires_at) VALUES (:name, :holder, :expires_at)
ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
WHERE conveyor_leaders.holder = excluded.holder OR conveyor_leaders.expires_at <= :now
RETURNING holder;

-- name: leader_resign
DELETE FROM conveyor_leaders WHERE name = :name AND holder = :holder;

-- name: leader_get
SELECT holder FROM conveyor_leaders WHERE name = :name AND expires_at > :now;
