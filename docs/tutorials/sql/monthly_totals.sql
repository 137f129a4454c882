SELECT subscriber, period, count(*) AS calls, sum(price) AS total
FROM bills
GROUP BY subscriber, period
