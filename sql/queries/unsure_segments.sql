-- answers: which segments was the model unsure about (confidence below a threshold)? The
-- candidates for human review and retraining.
-- param: below = 0.5
-- param: top = 50
SELECT segment_id, source_uri, member, start_s, end_s, text, emotion,
       round(emotion_confidence, 4) AS confidence, emotion_probs
FROM segments
WHERE emotion_confidence < CAST($below AS DOUBLE)
ORDER BY emotion_confidence, segment_id
LIMIT CAST($top AS INTEGER);
