-- answers: what did each run do, with which model, how fast?
SELECT run_id, started_at, finished_at, recordings, segments, errors,
       round(audio_hours, 3) AS audio_hours, round(rtfx, 1) AS rtfx, bundle_version, asr_model
FROM runs
ORDER BY started_at DESC;
