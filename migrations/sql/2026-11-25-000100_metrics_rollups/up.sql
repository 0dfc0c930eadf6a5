-- Rollups of signal_events per time bucket and ticker, kept EXACT with
-- respect to raw events, late and out-of-order ones included.
--
-- Maintenance: writers never update a summary row. A statement-level
-- trigger on signal_events appends the (minute, ticker) keys an INSERT
-- touched to rollup_dirty — a plain append with no unique index, so
-- concurrent writers never wait on each other — and the writer-side
-- refresher (audit-writer/src/store/rollups.rs) periodically takes the dirty keys and
-- recomputes exactly those minute buckets from raw events, then the hour and
-- day buckets containing them from the minute rows, in one transaction.
--
-- Latency samples: each terminal event contributes (event ts - signal
-- created_at). Percentiles come from a mergeable log-scale histogram:
-- bucket k holds values in [1.02^k, 1.02^(k+1)) milliseconds (k = 0 also
-- holds values below 1 ms) and is reported as 1.02^(k+0.5), so any
-- percentile of any merged range is within 1% of the exact value.

CREATE TYPE metrics_period AS ENUM ('minute', 'hour', 'day');

CREATE TABLE signal_metrics_summary (
    metric_id               BIGSERIAL PRIMARY KEY,
    period_type             metrics_period NOT NULL,
    period_start            TIMESTAMPTZ NOT NULL,
    period_end              TIMESTAMPTZ NOT NULL,
    -- '*' is every ticker together.
    normalised_ticker       VARCHAR(64) NOT NULL,
    total_events            BIGINT NOT NULL,
    -- received events: signals entering the pipeline in the bucket.
    total_signals           BIGINT NOT NULL,
    queued_processing       BIGINT NOT NULL,
    processing              BIGINT NOT NULL,
    approved_signals        BIGINT NOT NULL,
    rejected_signals        BIGINT NOT NULL,
    queued_forwarding       BIGINT NOT NULL,
    forwarding              BIGINT NOT NULL,
    forwarded_success       BIGINT NOT NULL,
    forwarded_timeout       BIGINT NOT NULL,
    forwarded_http_error    BIGINT NOT NULL,
    forwarded_generic_error BIGINT NOT NULL,
    discarded               BIGINT NOT NULL,
    error_status            BIGINT NOT NULL,
    forwarded_errors        BIGINT GENERATED ALWAYS AS
                              (forwarded_timeout + forwarded_http_error + forwarded_generic_error) STORED,
    -- events with error_info or an HTTP status >= 400.
    error_events            BIGINT NOT NULL,
    terminal_events         BIGINT NOT NULL,
    processing_time_sum_us  BIGINT NOT NULL,
    avg_processing_time     INTERVAL GENERATED ALWAYS AS
                              (CASE WHEN terminal_events = 0 THEN NULL
                                    ELSE (processing_time_sum_us / terminal_events) * interval '1 microsecond' END) STORED,
    -- {"bucket index": count}, see above.
    latency_histogram       JSONB NOT NULL DEFAULT '{}',
    created_at              TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (period_type, normalised_ticker, period_start)
);
CREATE INDEX signal_metrics_summary_range_idx
    ON signal_metrics_summary (period_type, period_start, normalised_ticker);

CREATE TABLE rollup_dirty (
    bucket_minute     TIMESTAMPTZ NOT NULL,
    normalised_ticker VARCHAR(64) NOT NULL
);

-- When the rollups were last brought up to date (as_of of every answer).
CREATE TABLE rollup_state (
    singleton    BOOLEAN PRIMARY KEY DEFAULT true CHECK (singleton),
    refreshed_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
INSERT INTO rollup_state DEFAULT VALUES;

CREATE FUNCTION mark_rollups_dirty() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO rollup_dirty (bucket_minute, normalised_ticker)
    SELECT DISTINCT date_trunc('minute', n.ts), s.normalised_ticker
    FROM new_events n JOIN signals s ON s.signal_id = n.signal_id;
    RETURN NULL;
END $$;

CREATE TRIGGER signal_events_mark_rollups
    AFTER INSERT ON signal_events
    REFERENCING NEW TABLE AS new_events
    FOR EACH STATEMENT EXECUTE FUNCTION mark_rollups_dirty();

-- Histogram bucket of a latency in microseconds.
CREATE FUNCTION latency_bucket(us BIGINT) RETURNS INT LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT CASE WHEN us < 1000 THEN 0 ELSE floor(ln(us / 1000.0) / ln(1.02))::int END
$$;

-- Sums histograms: the merge that makes percentiles of any range possible.
CREATE FUNCTION histogram_add(a JSONB, b JSONB) RETURNS JSONB LANGUAGE sql IMMUTABLE AS $$
    SELECT COALESCE(jsonb_object_agg(k, n), '{}')
    FROM (SELECT k, sum(v::bigint) AS n
          FROM (SELECT * FROM jsonb_each_text(COALESCE(a, '{}'))
                UNION ALL SELECT * FROM jsonb_each_text(COALESCE(b, '{}'))) AS e(k, v)
          GROUP BY k) AS t
$$;

CREATE AGGREGATE histogram_merge(JSONB) (SFUNC = histogram_add, STYPE = JSONB, INITCOND = '{}');

-- The q-quantile (0..1) of a histogram, in microseconds, interpolated
-- between neighbouring ranks the way percentile_cont does, each rank taken
-- at its bucket's representative value.
CREATE FUNCTION histogram_quantile(h JSONB, q DOUBLE PRECISION) RETURNS DOUBLE PRECISION
LANGUAGE sql IMMUTABLE AS $$
    WITH b AS (SELECT k::int AS k, v::bigint AS n FROM jsonb_each_text(h) AS e(k, v) WHERE v::bigint > 0),
         c AS (SELECT k, n, sum(n) OVER (ORDER BY k) - n AS before, sum(n) OVER () AS total FROM b),
         p AS (SELECT q * (max(total) - 1) AS pos FROM c),
         lo AS (SELECT 1000.0 * power(1.02, k + 0.5) AS v FROM c, p
                WHERE floor(p.pos) >= before AND floor(p.pos) < before + n),
         hi AS (SELECT 1000.0 * power(1.02, k + 0.5) AS v FROM c, p
                WHERE ceil(p.pos) >= before AND ceil(p.pos) < before + n)
    SELECT lo.v + (hi.v - lo.v) * (p.pos - floor(p.pos)) FROM lo, hi, p
$$;

-- GetErrorBreakdown reads failed events of a time range straight from the
-- events; this keeps that to the failures only.
CREATE INDEX signal_events_errors_idx ON signal_events (ts)
    WHERE error_info IS NOT NULL OR http_status >= 400;
