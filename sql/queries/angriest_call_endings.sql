-- answers: which calls had the most of one emotion (default anger) in their last N seconds?
-- param: label = angry
-- param: last_s = 300
-- param: top = 10
WITH ends AS (
    SELECT call_id, max(end_s) AS call_end FROM segments GROUP BY call_id
)
SELECT s.call_id,
       any_value(s.source_uri) AS source_uri,
       count(*) FILTER (WHERE s.emotion = $label) AS label_segments,
       count(*) AS segments_in_window,
       round(sum(s.end_s - s.start_s) FILTER (WHERE s.emotion = $label), 3) AS label_seconds,
       round(coalesce(sum(s.end_s - s.start_s) FILTER (WHERE s.emotion = $label), 0)
             / sum(s.end_s - s.start_s), 4) AS label_share
FROM segments s JOIN ends e USING (call_id)
WHERE s.start_s >= e.call_end - CAST($last_s AS DOUBLE)
GROUP BY s.call_id
ORDER BY label_seconds DESC NULLS LAST, s.call_id
LIMIT CAST($top AS INTEGER);
