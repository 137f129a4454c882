SELECT c.source AS subscriber,
       to_char(c.ended_at, 'YYYY-MM') AS period,
       c.call_id, c.destination, c.started_at, c.ended_at,
       c.ended_at - c.started_at AS duration,
       0.36 + 0.09 * (
           SELECT COALESCE(sum(floor(extract(epoch FROM
                      least(c.ended_at, d + interval '22 hours') - greatest(c.started_at, d + interval '6 hours')
                  ) / 60)), 0)
           FROM generate_series(date_trunc('day', c.started_at), date_trunc('day', c.ended_at), interval '1 day') AS d
           WHERE least(c.ended_at, d + interval '22 hours') > greatest(c.started_at, d + interval '6 hours')
       ) AS price
FROM calls_paired c
