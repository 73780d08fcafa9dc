-- answers: how does the share of one emotion (default sad) per episode change by week?
-- One row per week: episodes processed that week and the mean, min and max per-episode share of
-- spoken seconds with that emotion.
-- param: label = sad
WITH per_episode AS (
    SELECT recording_id,
           date_trunc('week', max(processed_at)) AS week,
           coalesce(sum(end_s - start_s) FILTER (WHERE emotion = $label), 0) / sum(end_s - start_s) AS share
    FROM segments
    GROUP BY recording_id
)
SELECT week,
       count(*) AS episodes,
       round(avg(share), 4) AS mean_share,
       round(min(share), 4) AS min_share,
       round(max(share), 4) AS max_share
FROM per_episode
GROUP BY week
ORDER BY week;
