-- answers: how is speech spread over the emotions, in segments and in hours?
SELECT emotion,
       count(*) AS segments,
       round(sum(end_s - start_s) / 3600, 4) AS hours,
       round(count(*) / sum(count(*)) OVER (), 4) AS share,
       round(avg(emotion_confidence), 4) AS mean_confidence
FROM segments
GROUP BY emotion
ORDER BY segments DESC, emotion;
