SELECT i.org_id, date_trunc('hour', u.date) AS hour, sum(u.bytes_used) AS bytes_used
FROM usage u JOIN inventory i ON i.sim_card_id = u.sim_card_id
GROUP BY i.org_id, date_trunc('hour', u.date)
