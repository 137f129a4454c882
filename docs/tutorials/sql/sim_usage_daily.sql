SELECT sim_card_id, date_trunc('day', date) AS day, sum(bytes_used) AS bytes_used
FROM usage
GROUP BY sim_card_id, date_trunc('day', date)
