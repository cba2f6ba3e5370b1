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

-- name: job_complete
-- Each outcome returns the change it made (a JobChange), or no row when it was stale.
UPDATE conveyor_jobs
SET state = 'completed', result = :result, finished_at = :finished_at,
    lease_expires_at = NULL
WHERE id = :id AND state = 'active' AND worker_id = :worker_id AND attempt = :attempt
RETURNING id, queue, task, state, attempt, run_at, started_at;

-- name: job_retry_later
UPDATE conveyor_jobs
SET state = CASE
        WHEN cancel_requested THEN 'cancelled'
        WHEN :run_at > :finished_at THEN 'scheduled'
        ELSE 'queued' END,
    finished_at = CASE WHEN cancel_requested THEN :finished_at ELSE NULL END,
    run_at = :run_at, errors = json_insert(errors, '$[#]', json(:error)),
    worker_id = NULL, lease_expires_at = NULL
WHERE id = :id AND state = 'active' AND worker_id = :worker_id AND attempt = :attempt
RETURNING id, queue, task, state, attempt, run_at, started_at;

-- name: job_snooze_started_at
SELECT started_at FROM conveyor_jobs
WHERE id = :id AND state = 'active' AND worker_id = :worker_id AND attempt = :attempt;

-- name: job_snooze
-- Postponed without counting the attempt; the attempt's start is read before (above),
-- since RETURNING sees only the cleared row.
UPDATE conveyor_jobs
SET state = CASE
        WHEN cancel_requested THEN 'cancelled'
        WHEN :run_at > :finished_at THEN 'scheduled'
        ELSE 'queued' END,
    finished_at = CASE WHEN cancel_requested THEN :finished_at ELSE NULL END,
    run_at = :run_at, attempt = attempt - 1, snoozes = snoozes + 1,
    worker_id = NULL, lease_expires_at = NULL, started_at = NULL
WHERE id = :id AND state = 'active' AND worker_id = :worker_id AND attempt = :attempt
RETURNING id, queue, task, state, attempt, run_at;

-- name: job_fail
UPDATE conveyor_jobs
SET state = 'failed', finished_at = :finished_at, errors = json_insert(errors, '$[#]', json(:error)),
    lease_expires_at = NULL
WHERE id = :id AND state = 'active' AND worker_id = :worker_id AND attempt = :attempt
RETURNING id, queue, task, state, attempt, run_at, started_at;

-- name: job_cancelled
UPDATE conveyor_jobs
SET state = 'cancelled', finished_at = :finished_at, lease_expires_at = NULL
WHERE id = :id AND state = 'active' AND worker_id = :worker_id AND attempt = :attempt
RETURNING id, queue, task, state, attempt, run_at, started_at;

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
-- At most :limit rows, oldest first along conveyor_jobs_prune, so no delete runs long.
DELETE FROM conveyor_jobs
WHERE id IN (
    SELECT id FROM conveyor_jobs
    WHERE state IN ('completed', 'failed', 'cancelled')
      AND finished_at < max(:completed_before, :failed_before)
      AND finished_at < CASE WHEN state = 'completed' THEN :completed_before
                             ELSE :failed_before END
    ORDER BY finished_at
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
