-- answers: how much of the speech got an emotion, and how much was set aside as unsure (its
-- confidence under the abstention threshold the run served with)? Per label: segments, hours and
-- the mean confidence; the unsure row's share is 1 - coverage.
SELECT emotion,
       count(*) AS segments,
       round(sum(end_s - start_s) / 3600, 4) AS hours,
       round(count(*) / sum(count(*)) OVER (), 4) AS share,
       round(avg(emotion_confidence), 4) AS mean_confidence,
       round(1 - coalesce(sum(count(*)) FILTER (WHERE emotion = 'unsure') OVER (), 0)
                 / sum(count(*)) OVER (), 4) AS coverage
FROM segments
GROUP BY emotion
ORDER BY emotion = 'unsure', segments DESC, emotion;
