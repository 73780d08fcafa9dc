-- answers: what could the last run not do, and why? Every file it committed with errors: left
-- for the next run (status retry: a transient error, done again by any later run) or
-- quarantined (status done with errors: the file's own fault, done again only with
-- --retry-errors), with the stage that failed, the error's type, class and message.
-- param: run = latest
WITH chosen AS (
    SELECT run_id FROM runs
    WHERE $run = 'latest' OR run_id = $run
    ORDER BY started_at DESC
    LIMIT 1
)
SELECT f.source_uri || CASE WHEN f.member <> '' THEN '!' || f.member ELSE '' END AS input,
       CASE WHEN f.status = 'retry' THEN 'next run' ELSE 'quarantined' END AS outcome,
       e.stage, e.error_type, e.error_class, e.message, f.run_id
FROM files f
JOIN errors e ON e.call_id = f.call_id AND e.commit_id = f.commit_id
WHERE f.run_id IN (SELECT run_id FROM chosen)
ORDER BY outcome, input, e.stage;
