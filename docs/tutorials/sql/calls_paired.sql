SELECT s.call_id, s.source, s.destination,
       s.record_timestamp AS started_at, e.record_timestamp AS ended_at
FROM calls s
JOIN calls e ON e.call_id = s.call_id AND e.record_type = 'end'
WHERE s.record_type = 'start'
