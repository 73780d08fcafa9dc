-- Views over one annotator output (local path or s3://). annotator/query/duckdb.py fills in
-- {segments}, {errors}, {files} and {runs} with read_parquet([...]) over the Parquet files of each
-- Delta table's snapshot (listed from its log; no extension needed).
--
-- files is the ledger: a file is committed when it has a row there, and its segment and error rows
-- carry that row's commit_id. When one file was committed more than once (a --force rerun, or two
-- runs that did it at once) the latest commit wins; rows of other commits, and rows of a commit a
-- crash cut short (no files row), are not shown. Other engines (Spark, Trino, Polars) read the same
-- Delta tables and apply the same join.

CREATE OR REPLACE VIEW files AS
SELECT * FROM {files}
QUALIFY row_number() OVER (PARTITION BY call_id ORDER BY committed_at DESC, commit_id DESC) = 1;

CREATE OR REPLACE VIEW segments AS
SELECT s.* FROM {segments} s
SEMI JOIN files f ON s.call_id = f.call_id AND s.commit_id = f.commit_id;

CREATE OR REPLACE VIEW errors AS
SELECT e.* FROM {errors} e
SEMI JOIN files f ON e.call_id = f.call_id AND e.commit_id = f.commit_id;

CREATE OR REPLACE VIEW runs AS SELECT * FROM {runs};

-- One row per recording: how long its speech runs, how many segments, which emotion dominates
-- (by spoken seconds), each emotion's share of spoken seconds, and its main language.
CREATE OR REPLACE VIEW recordings AS
WITH per_emotion AS (
    SELECT recording_id, emotion, sum(end_s - start_s) AS seconds
    FROM segments
    GROUP BY recording_id, emotion
)
SELECT s.recording_id,
       any_value(s.call_id) AS call_id,
       any_value(s.source_uri) AS source_uri,
       any_value(s.member) AS member,
       any_value(s.channel) AS channel,
       max(s.end_s) AS duration_s,
       sum(s.end_s - s.start_s) AS speech_s,
       count(*) AS segments,
       any_value(d.dominant_emotion) AS dominant_emotion,
       any_value(d.emotion_shares) AS emotion_shares,
       mode(s.language) AS language,
       avg(s.emotion_confidence) AS mean_confidence,
       max(s.processed_at) AS processed_at
FROM segments s
JOIN (
    SELECT recording_id,
           arg_max(emotion, seconds) AS dominant_emotion,
           map_from_entries(list({'key': emotion, 'value': seconds / total} ORDER BY emotion)) AS emotion_shares
    FROM (SELECT *, sum(seconds) OVER (PARTITION BY recording_id) AS total FROM per_emotion)
    GROUP BY recording_id
) d USING (recording_id)
GROUP BY s.recording_id;

-- Turns: consecutive segments of one speaker merged. Within a call (the channels of a split call,
-- or a mixed recording alone) segments are taken in time order; a turn ends when the channel
-- changes or the speaker pauses longer than 1.5 s.
CREATE OR REPLACE VIEW turns AS
WITH ordered AS (
    SELECT *,
           lag(recording_id) OVER w AS prev_recording,
           lag(end_s) OVER w AS prev_end
    FROM segments
    WINDOW w AS (PARTITION BY call_id ORDER BY start_s, recording_id)
),
marked AS (
    SELECT *,
           sum(CASE WHEN prev_recording IS DISTINCT FROM recording_id OR start_s - prev_end > 1.5
                    THEN 1 ELSE 0 END) OVER (PARTITION BY call_id ORDER BY start_s, recording_id) AS turn_index
    FROM ordered
)
SELECT call_id,
       turn_index,
       any_value(recording_id) AS recording_id,
       any_value(channel) AS channel,
       min(start_s) AS start_s,
       max(end_s) AS end_s,
       count(*) AS segments,
       string_agg(text, ' ' ORDER BY start_s) AS text,
       mode(emotion) AS emotion,
       avg(emotion_confidence) AS mean_confidence
FROM marked
GROUP BY call_id, turn_index;
