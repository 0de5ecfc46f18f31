-- hf_fdw 0.1.0 to 0.2.0: what this backend spent (hf_fdw.usage), the answer
-- cache (hf_fdw.cache, hf_fdw.clear_cache()), and a model's own settings in
-- describe_model.
--
-- A fresh CREATE EXTENSION runs hf_fdw--0.1.0.sql and then this script, so
-- both paths give the same objects.

\echo Use "ALTER EXTENSION hf_fdw UPDATE TO '0.2.0'" to load this file. \quit

-- The backend's own state, read through the same Python package. The server
-- name hf_fdw_backend is reserved for this.
DO $$
DECLARE
    message text;
    detail text;
BEGIN
    CREATE SERVER hf_fdw_backend FOREIGN DATA WRAPPER multicorn
        OPTIONS (wrapper 'hf_fdw.BackendStateFDW');
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS message = MESSAGE_TEXT, detail = PG_EXCEPTION_DETAIL;
    PERFORM hf_fdw._explain_import_error(message, detail);
    RAISE;
END;
$$;

-- hf_fdw.usage: per engine and model, what this backend has sent since it
-- started: requests (retries included), retries, answers served from the
-- cache, predictions that failed, and seconds spent waiting.
CREATE FOREIGN TABLE hf_fdw.usage (
    engine     text,
    model      text,
    task       text,
    requests   bigint,
    retries    bigint,
    cache_hits bigint,
    errors     bigint,
    seconds    double precision
) SERVER hf_fdw_backend OPTIONS (view 'usage');

COMMENT ON FOREIGN TABLE hf_fdw.usage IS
    'Requests, retries, cache hits, errors and time per model, in this backend';

-- hf_fdw._cache: the answer cache; WHERE action = 'clear' empties it.
CREATE FOREIGN TABLE hf_fdw._cache (
    action  text,
    entries bigint,
    bytes   bigint
) SERVER hf_fdw_backend OPTIONS (view 'cache');

-- hf_fdw.cache: how many answers this backend holds, and their size.
CREATE VIEW hf_fdw.cache AS
    SELECT entries, bytes FROM hf_fdw._cache WHERE action = 'status';

-- clear_cache: forget every cached answer in this backend; returns how many.
CREATE FUNCTION hf_fdw.clear_cache()
RETURNS bigint
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT entries FROM hf_fdw._cache WHERE action = 'clear'
$$;

COMMENT ON FUNCTION hf_fdw.clear_cache() IS
    'Forget the answers cached in this backend; returns how many there were';

GRANT SELECT ON hf_fdw.usage, hf_fdw._cache, hf_fdw.cache TO PUBLIC;

-- describe_model: now also the settings a model overrides (timeout,
-- max_retries, concurrency, max_requests, on_error, cache_ttl, verbose).
CREATE OR REPLACE FUNCTION hf_fdw.describe_model(name text)
RETURNS TABLE (property text, value text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    m hf_fdw.models;
    e hf_fdw.engines;
    key_source text;
    settings text;
BEGIN
    SELECT * INTO m FROM hf_fdw.models x WHERE x.name = describe_model.name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'model "%" does not exist', name
            USING ERRCODE = 'undefined_object',
                  HINT = 'SELECT name FROM hf_fdw.models lists the models';
    END IF;
    SELECT * INTO e FROM hf_fdw.engines x WHERE x.name = m.engine;

    SELECT CASE
               WHEN um.umuser IS NOT NULL THEN
                   'in the user mapping for ' || um.usename || ' (hidden)'
               WHEN e.options ? 'api_key_env' THEN
                   'from the server''s environment variable '
                   || (e.options ->> 'api_key_env')
               ELSE 'not set'
           END
    INTO key_source
    FROM (SELECT 1) AS one
    LEFT JOIN pg_user_mappings um
           ON um.srvname = m.engine
          AND um.usename IN (current_user::text, 'public')
    ORDER BY um.usename = 'public'
    LIMIT 1;

    SELECT string_agg(o.option_name || '=' || o.option_value, ', '
                      ORDER BY o.option_name)
    INTO settings
    FROM pg_foreign_table ft, pg_options_to_table(ft.ftoptions) AS o
    WHERE ft.ftrelid = m.relation
      AND o.option_name IN ('timeout', 'max_retries', 'concurrency',
                            'max_requests', 'on_error', 'cache_ttl', 'verbose');

    RETURN QUERY VALUES
        ('name', m.name),
        ('table', m.relation::text),
        ('engine', m.engine),
        ('engine endpoint', e.endpoint),
        ('engine options', e.options::text),
        ('task', m.task),
        ('model_name', m.model_name),
        -- Where requests go, as hf_fdw.options.request_url computes it.
        ('endpoint', CASE
            WHEN m.endpoint IS NOT NULL THEN m.endpoint
            WHEN m.task = 'chat-completion' THEN
                regexp_replace(e.endpoint, '/hf-inference$', '')
                || '/v1/chat/completions'
            ELSE e.endpoint || '/models/' || m.model_name
                 || CASE WHEN m.task IN ('sentence-similarity', 'feature-extraction')
                         THEN '/pipeline/' || m.task ELSE '' END
         END),
        ('input_column', m.input_column),
        ('context_column', m.context_column),
        ('input_column2', m.input_column2),
        ('predict', m.predict),
        ('candidate_labels', m.candidate_labels::text),
        ('labels', m.labels::text),
        ('parameters', m.parameters::text),
        ('options', m.options::text),
        ('settings', settings),
        ('api_key', key_source),
        ('owner', m.owner::text),
        ('created', m.created::text);
END;
$$;
