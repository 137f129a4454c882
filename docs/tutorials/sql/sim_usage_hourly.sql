SELECT sim_card_id, date_trunc('hour', date) AS hour, sum(bytes_used) AS bytes_used
FROM usage
GROUP BY sim_card_id, date_trunc('hour', date)
