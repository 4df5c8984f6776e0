-- The overlap example as SQL: no code to review, only these queries and each
-- party's rules (access.yaml.example). Every query is checked against both rules
-- before the room is deployed, and again by the Worker on every run.

-- query: overlap
-- output: output_1
SELECT COUNT(DISTINCT a.email_sha256) AS customers
FROM input_1 a JOIN input_2 b ON a.email_sha256 = b.email_sha256;

-- query: crosstab
-- output: output_1
SELECT a.region, b.segment, COUNT(DISTINCT a.email_sha256) AS customers
FROM input_1 a JOIN input_2 b ON a.email_sha256 = b.email_sha256
GROUP BY a.region, b.segment
ORDER BY a.region, b.segment;

-- query: crosstab_in
-- output: output_1
-- parameters: region text
SELECT b.segment, COUNT(DISTINCT a.email_sha256) AS customers
FROM input_1 a JOIN input_2 b ON a.email_sha256 = b.email_sha256
WHERE a.region = $region
GROUP BY b.segment
ORDER BY b.segment;
