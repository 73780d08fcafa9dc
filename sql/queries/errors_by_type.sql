-- answers: what went wrong, where, and how often? One example input per kind of error.
SELECT stage, error_type, count(*) AS errors, min(source_uri || CASE WHEN member <> '' THEN '!' || member ELSE '' END) AS example
FROM errors
GROUP BY stage, error_type
ORDER BY errors DESC, stage, error_type;
