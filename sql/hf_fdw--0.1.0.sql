-- hf_fdw 0.1.0: Hugging Face inference models as PostgreSQL foreign tables.
--
-- An engine is a foreign server of the multicorn wrapper hf_fdw.HuggingFaceFDW
-- (its endpoint and settings), with the API key in a user mapping. A model is
-- a foreign table on that server whose options name the task, the model and
-- the columns. The catalog tables below record both, so that they can be
-- described and dropped by name; event triggers keep them in step with the
-- foreign servers and tables, whichever way those are created or dropped.
--
-- Every function runs with search_path = pg_catalog, pg_temp and builds its
-- dynamic statements with format('%I', ...) and format('%L', ...).

\echo Use "CREATE EXTENSION hf_fdw CASCADE" to load this file. \quit

-- ---------------------------------------------------------------------------
-- hf_fdw.tasks: the tasks hf_fdw serves. Read-only reference data; the Python
-- package holds the same list (hf_fdw/tasks.py), and a test keeps them equal.
-- inputs lists the create_model arguments that name the input columns, and
-- input_type the type create_model gives them (image and audio tasks take
-- the file's bytes, or an http(s) URL, in a bytea column).
-- ---------------------------------------------------------------------------
CREATE TABLE hf_fdw.tasks (
    task          text PRIMARY KEY,
    inputs        text[] NOT NULL,
    predict_type  text NOT NULL,
    default_model text,
    input_type    text NOT NULL DEFAULT 'text'
);

COMMENT ON TABLE hf_fdw.tasks IS
    'Tasks hf_fdw serves: input columns, prediction type, default model';

INSERT INTO hf_fdw.tasks (task, inputs, predict_type, default_model) VALUES
    ('text-classification', '{input_column}', 'text',
     'distilbert/distilbert-base-uncased-finetuned-sst-2-english'),
    ('zero-shot-classification', '{input_column}', 'text',
     'facebook/bart-large-mnli'),
    ('sentence-similarity', '{input_column,input_column2}', 'double precision',
     'sentence-transformers/all-MiniLM-L6-v2'),
    ('question-answering', '{input_column,context_column}', 'text',
     'deepset/roberta-base-squad2'),
    ('summarization', '{input_column}', 'text', 'facebook/bart-large-cnn'),
    ('text-generation', '{input_column}', 'text', NULL),
    ('fill-mask', '{input_column}', 'text', 'google-bert/bert-base-uncased'),
    ('translation', '{input_column}', 'text', 'google-t5/t5-small'),
    ('feature-extraction', '{input_column}', 'double precision[]',
     'sentence-transformers/all-MiniLM-L6-v2'),
    ('token-classification', '{input_column}', 'jsonb', 'dslim/bert-base-NER'),
    ('text-to-image', '{input_column}', 'bytea', 'black-forest-labs/FLUX.1-schnell'),
    ('chat-completion', '{input_column}', 'text', NULL);

INSERT INTO hf_fdw.tasks (task, inputs, predict_type, default_model, input_type)
VALUES
    ('table-question-answering', '{input_column,context_column}', 'text',
     'google/tapas-base-finetuned-wtq', 'text');

INSERT INTO hf_fdw.tasks (task, inputs, predict_type, default_model, input_type)
VALUES
    ('image-classification', '{input_column}', 'text',
     'google/vit-base-patch16-224', 'bytea'),
    ('object-detection', '{input_column}', 'jsonb', 'facebook/detr-resnet-50',
     'bytea'),
    ('image-to-text', '{input_column}', 'text',
     'Salesforce/blip-image-captioning-base', 'bytea'),
    ('automatic-speech-recognition', '{input_column}', 'text',
     'facebook/wav2vec2-base-960h', 'bytea'),
    ('audio-classification', '{input_column}', 'text',
     'superb/hubert-large-superb-er', 'bytea');

-- ---------------------------------------------------------------------------
-- hf_fdw.settings: how requests are made. An engine sets them in its options
-- object; a model overrides those marked per_model with foreign table
-- options. Read-only reference data; hf_fdw/options.py holds the same list
-- (ENGINE_SETTINGS), and a test keeps them equal.
-- ---------------------------------------------------------------------------
CREATE TABLE hf_fdw.settings (
    name          text PRIMARY KEY,
    kind          text NOT NULL CHECK (kind IN ('number', 'integer', 'boolean',
                                                'word', 'variable')),
    default_value text,
    min_value     numeric,
    max_value     numeric,
    allowed       text[],
    per_model     boolean NOT NULL,
    description   text NOT NULL
);

COMMENT ON TABLE hf_fdw.settings IS
    'Engine options (and per-model overrides): kind, default, bounds';

INSERT INTO hf_fdw.settings VALUES
    ('timeout', 'number', '30', 0.1, 600, NULL, true,
     'seconds to wait for one answer'),
    ('max_retries', 'integer', '3', 0, 10, NULL, true,
     'retries after 429, 5xx and connection failures'),
    ('concurrency', 'integer', '8', 1, 64, NULL, true,
     'requests in flight at once for one scan'),
    ('max_requests', 'integer', '10000', 1, 100000000, NULL, true,
     'requests one statement may send to one model'),
    ('on_error', 'word', 'raise', NULL, NULL, ARRAY['raise', 'null'], true,
     'null: a failed prediction becomes NULL, with one WARNING per statement'),
    ('cache_ttl', 'number', NULL, 0, 604800, NULL, true,
     'seconds an answer is reused (default 600; 0 for text-generation)'),
    ('verbose', 'boolean', 'false', NULL, NULL, NULL, true,
     'report each batch of requests'),
    ('max_media_bytes', 'integer', '20971520', 1024, 104857600, NULL, true,
     'the largest image or sound accepted or downloaded'),
    ('batch_size', 'integer', '1', 1, 256, NULL, true,
     'inputs per request where the task can batch (feature-extraction)'),
    ('allow_private_urls', 'boolean', 'false', NULL, NULL, NULL, false,
     'let media URLs reach loopback and private addresses'),
    ('api_key_env', 'variable', NULL, NULL, NULL, NULL, false,
     'read the key from this environment variable of the server');

-- _check_settings: refuse an engine options object that names an unknown
-- setting or gives one a value of the wrong kind or out of bounds.
CREATE FUNCTION hf_fdw._check_settings(options jsonb)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    item record;
    setting hf_fdw.settings;
    number numeric;
    ok boolean;
BEGIN
    IF jsonb_typeof(options) <> 'object' THEN
        RAISE EXCEPTION 'engine options must be a JSON object, not %',
            jsonb_typeof(options)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'e.g. options => ''{"timeout": 30, "max_retries": 3}''';
    END IF;
    FOR item IN SELECT * FROM jsonb_each(options) LOOP
        SELECT * INTO setting FROM hf_fdw.settings s WHERE s.name = item.key;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'unknown engine option: %', item.key
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'engine options are: ' || (
                          SELECT string_agg(s.name, ', ' ORDER BY s.name)
                          FROM hf_fdw.settings s);
        END IF;
        number := CASE WHEN jsonb_typeof(item.value) = 'number'
                       THEN (item.value #>> '{}')::numeric END;
        ok := CASE setting.kind
            WHEN 'number' THEN
                number BETWEEN setting.min_value AND setting.max_value
            WHEN 'integer' THEN
                number = trunc(number)
                AND number BETWEEN setting.min_value AND setting.max_value
            WHEN 'boolean' THEN jsonb_typeof(item.value) = 'boolean'
            WHEN 'word' THEN jsonb_typeof(item.value) = 'string'
                AND item.value #>> '{}' = ANY (setting.allowed)
            ELSE jsonb_typeof(item.value) = 'string'
                AND item.value #>> '{}' ~ '^[A-Za-z_][A-Za-z0-9_]*$'
        END;
        IF NOT coalesce(ok, false) THEN
            RAISE EXCEPTION 'engine option % cannot be %', item.key, item.value
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = item.key || ' takes ' || CASE setting.kind
                          WHEN 'number' THEN format('a number from %s to %s',
                              setting.min_value, setting.max_value)
                          WHEN 'integer' THEN format('a whole number from %s to %s',
                              setting.min_value, setting.max_value)
                          WHEN 'boolean' THEN 'true or false'
                          WHEN 'word' THEN 'one of '
                              || array_to_string(setting.allowed, ', ')
                          ELSE 'the name of an environment variable' END;
        END IF;
    END LOOP;
END;
$$;

-- ---------------------------------------------------------------------------
-- hf_fdw.engines: one row per engine (foreign server). Holds no secret: the
-- API key lives in a user mapping, which only the server's owner and
-- superusers can read.
-- ---------------------------------------------------------------------------
CREATE TABLE hf_fdw.engines (
    name     text PRIMARY KEY,
    endpoint text NOT NULL,
    options  jsonb NOT NULL DEFAULT '{}',
    owner    name NOT NULL DEFAULT current_user,
    created  timestamptz NOT NULL DEFAULT now()
);

COMMENT ON TABLE hf_fdw.engines IS
    'Registered engines; API keys are kept in user mappings, never here';

-- ---------------------------------------------------------------------------
-- hf_fdw.models: one row per model registered with create_model.
-- ---------------------------------------------------------------------------
CREATE TABLE hf_fdw.models (
    name             text PRIMARY KEY,
    relation         regclass NOT NULL UNIQUE,
    engine           text NOT NULL,
    task             text NOT NULL,
    model_name       text,
    predict          text NOT NULL,
    input_column     text NOT NULL,
    context_column   text,
    input_column2    text,
    candidate_labels text[],
    labels           jsonb,
    endpoint         text,
    options          jsonb,
    parameters       jsonb,
    owner            name NOT NULL DEFAULT current_user,
    created          timestamptz NOT NULL DEFAULT now()
);

COMMENT ON TABLE hf_fdw.models IS
    'Registered models and the foreign tables that serve their predictions';

SELECT pg_catalog.pg_extension_config_dump('hf_fdw.engines', '');
SELECT pg_catalog.pg_extension_config_dump('hf_fdw.models', '');

GRANT USAGE ON SCHEMA hf_fdw TO PUBLIC;
GRANT SELECT ON hf_fdw.tasks, hf_fdw.settings, hf_fdw.engines, hf_fdw.models
    TO PUBLIC;

-- ---------------------------------------------------------------------------
-- _check_endpoint: refuse what is not an http(s) URL, and the retired host.
-- ---------------------------------------------------------------------------
CREATE FUNCTION hf_fdw._check_endpoint(url text, what text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    host text;
BEGIN
    IF url IS NULL THEN
        RETURN NULL;
    END IF;
    host := lower(substring(url FROM '^[Hh][Tt][Tt][Pp][Ss]?://([^/:?#@\s]+)'));
    IF host IS NULL OR url ~ '\s' THEN
        RAISE EXCEPTION '% is not an http(s) URL: %', what, url
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'give a URL such as http://127.0.0.1:8080 or '
                      || 'https://<name>.endpoints.huggingface.cloud';
    END IF;
    IF url ~* '^https?://[^/?#]*@' THEN
        RAISE EXCEPTION '% must not carry credentials in the URL', what
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'give the key as api_key, which is kept in a user mapping';
    END IF;
    IF host = 'api-inference.huggingface.co' THEN
        RAISE EXCEPTION '% names the retired host %', what, host
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'the serverless Inference API moved; the old host '
                      || 'answers 410 Gone',
                  HINT = 'use the router, https://router.huggingface.co/hf-inference '
                      || '(the default when no endpoint is given)';
    END IF;
    RETURN btrim(url);
END;
$$;

-- ---------------------------------------------------------------------------
-- _register_engine / _register_model: the only writers of the catalog. They
-- run as the extension's owner, and record an object only for a member of
-- the role that owns it; create_engine and create_model call them.
-- ---------------------------------------------------------------------------
CREATE FUNCTION hf_fdw._register_engine(name text, endpoint text, options jsonb)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_foreign_server s
                   WHERE s.srvname = _register_engine.name
                     AND pg_has_role(session_user, s.srvowner, 'MEMBER')) THEN
        RAISE EXCEPTION 'you do not own a foreign server named %', name
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    INSERT INTO hf_fdw.engines (name, endpoint, options, owner)
    SELECT name, endpoint, options, s.srvowner::regrole::name
    FROM pg_foreign_server s WHERE s.srvname = _register_engine.name;
END;
$$;

CREATE FUNCTION hf_fdw._register_model(model hf_fdw.models)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_class c
                   WHERE c.oid = model.relation
                     AND pg_has_role(session_user, c.relowner, 'MEMBER')) THEN
        RAISE EXCEPTION 'you do not own the foreign table %', model.relation
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    model.owner := (SELECT c.relowner::regrole::name FROM pg_class c
                    WHERE c.oid = model.relation);
    model.created := now();
    INSERT INTO hf_fdw.models SELECT model.*;
END;
$$;

-- ---------------------------------------------------------------------------
-- _explain_import_error: given an error's message and detail, raise instead
-- the fix when the server's Python could not import hf_fdw (Multicorn reports
-- that as "Error in python: ModuleNotFoundError"); else do nothing.
-- ---------------------------------------------------------------------------
CREATE FUNCTION hf_fdw._explain_import_error(message text, detail text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF message LIKE 'Error in python:%' AND detail LIKE '%hf_fdw%' THEN
        RAISE EXCEPTION 'the database server''s Python cannot import hf_fdw'
            USING ERRCODE = 'undefined_file',
                  DETAIL = message || ': ' || detail,
                  HINT = 'install the package into the Python PostgreSQL embeds, '
                      || 'or put it on the server''s PYTHONPATH (README, Install, '
                      || 'step 3), then restart the server';
    END IF;
END;
$$;

-- ---------------------------------------------------------------------------
-- create_engine: the MindsDB ML_ENGINE. Creates the foreign server and, when
-- a key is given, a user mapping FOR PUBLIC that holds it.
-- ---------------------------------------------------------------------------
CREATE FUNCTION hf_fdw.create_engine(
    name text,
    api_key text DEFAULT NULL,
    endpoint text DEFAULT NULL,
    options jsonb DEFAULT '{}'
)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    base text;
    message text;
    detail text;
BEGIN
    IF name IS NULL OR btrim(name) = '' THEN
        RAISE EXCEPTION 'engine name must not be empty'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF octet_length(name) > 63 THEN
        RAISE EXCEPTION 'engine name is longer than 63 bytes'
            USING ERRCODE = 'name_too_long',
                  HINT = 'PostgreSQL names are at most 63 bytes; choose a shorter one';
    END IF;
    IF EXISTS (SELECT FROM hf_fdw.engines e WHERE e.name = create_engine.name) THEN
        RAISE EXCEPTION 'engine "%" already exists', name
            USING ERRCODE = 'duplicate_object',
                  HINT = format('drop it first: SELECT hf_fdw.drop_engine(%L)', name);
    END IF;

    base := rtrim(hf_fdw._check_endpoint(
        coalesce(endpoint, 'https://router.huggingface.co/hf-inference'),
        'engine endpoint'), '/');

    options := coalesce(options, '{}');
    PERFORM hf_fdw._check_settings(options);

    BEGIN
        EXECUTE format(
            'CREATE SERVER %I FOREIGN DATA WRAPPER multicorn OPTIONS '
            '(wrapper %L, engine_name %L, engine_endpoint %L, engine_options %L)',
            name, 'hf_fdw.HuggingFaceFDW', name, base, options::text);
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS message = MESSAGE_TEXT, detail = PG_EXCEPTION_DETAIL;
        PERFORM hf_fdw._explain_import_error(message, detail);
        RAISE;
    END;
    IF api_key IS NOT NULL THEN
        EXECUTE format(
            'CREATE USER MAPPING FOR PUBLIC SERVER %I OPTIONS (api_key %L)',
            name, api_key);
    END IF;
    PERFORM hf_fdw._register_engine(name, base, options);
    RETURN name;
END;
$$;

COMMENT ON FUNCTION hf_fdw.create_engine(text, text, text, jsonb) IS
    'Register an engine: a foreign server for an inference endpoint, its key '
    'in a user mapping';

-- ---------------------------------------------------------------------------
-- set_api_key: store (or, with NULL, remove) the key of an engine for a role.
-- ---------------------------------------------------------------------------
CREATE FUNCTION hf_fdw.set_api_key(
    engine text,
    api_key text,
    for_role text DEFAULT 'PUBLIC'
)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    role_sql text;
    mapped boolean;
BEGIN
    IF NOT EXISTS (SELECT FROM hf_fdw.engines e WHERE e.name = engine) THEN
        RAISE EXCEPTION 'engine "%" does not exist', engine
            USING ERRCODE = 'undefined_object',
                  HINT = 'SELECT name FROM hf_fdw.engines lists the engines';
    END IF;
    role_sql := CASE WHEN upper(for_role) = 'PUBLIC' THEN 'PUBLIC'
                     ELSE quote_ident(for_role) END;
    SELECT EXISTS (
        SELECT FROM pg_user_mappings m
        WHERE m.srvname = engine
          AND m.usename = CASE WHEN role_sql = 'PUBLIC' THEN 'public'
                               ELSE for_role END)
    INTO mapped;

    IF NOT mapped THEN
        EXECUTE format('CREATE USER MAPPING FOR %s SERVER %I', role_sql, engine);
    END IF;
    -- Drop whatever key is there, then add the new one.
    BEGIN
        EXECUTE format('ALTER USER MAPPING FOR %s SERVER %I OPTIONS (DROP api_key)',
                       role_sql, engine);
    EXCEPTION WHEN undefined_object THEN
        NULL;
    END;
    IF api_key IS NOT NULL THEN
        EXECUTE format('ALTER USER MAPPING FOR %s SERVER %I OPTIONS (ADD api_key %L)',
                       role_sql, engine, api_key);
    END IF;
END;
$$;

COMMENT ON FUNCTION hf_fdw.set_api_key(text, text, text) IS
    'Store an engine''s API key in the user mapping of a role (PUBLIC by default)';

-- ---------------------------------------------------------------------------
-- create_model: the MindsDB CREATE MODEL. Validates the arguments, creates
-- the foreign table "name" in the caller's current schema, and records it.
-- The foreign table's options are validated again by the Python wrapper
-- (see _on_ddl_end), so a model that cannot run is never registered.
-- ---------------------------------------------------------------------------
CREATE FUNCTION hf_fdw._create_model(
    target_schema text,
    name text,
    predict text,
    engine text,
    task text,
    model_name text,
    input_column text,
    context_column text,
    input_column2 text,
    candidate_labels text[],
    labels jsonb,
    endpoint text,
    options jsonb,
    parameters jsonb
)
RETURNS regclass
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    spec hf_fdw.tasks;
    columns text[] := '{}';
    column_sql text[] := '{}';
    table_options text[] := '{}';
    arg text;
    col text;
    rel regclass;
    chosen_model text;
    model_row hf_fdw.models;
BEGIN
    IF target_schema IS NULL THEN
        RAISE EXCEPTION 'no schema to create the model''s table in'
            USING ERRCODE = 'invalid_schema_name',
                  HINT = 'SET search_path to a schema you can create tables in';
    END IF;
    IF name IS NULL OR btrim(name) = '' THEN
        RAISE EXCEPTION 'model name must not be empty'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF octet_length(name) > 63 OR octet_length(predict) > 63
       OR octet_length(input_column) > 63 OR octet_length(context_column) > 63
       OR octet_length(input_column2) > 63 THEN
        RAISE EXCEPTION 'a model or column name is longer than 63 bytes'
            USING ERRCODE = 'name_too_long',
                  HINT = 'PostgreSQL names are at most 63 bytes; choose a shorter one';
    END IF;
    IF predict IS NULL OR btrim(predict) = '' THEN
        RAISE EXCEPTION 'predict must name the column that receives the prediction'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'e.g. predict => ''sentiment''';
    END IF;
    IF NOT EXISTS (SELECT FROM hf_fdw.engines e WHERE e.name = engine) THEN
        RAISE EXCEPTION 'engine "%" does not exist', engine
            USING ERRCODE = 'undefined_object',
                  HINT = 'create it first: SELECT hf_fdw.create_engine(''name'', '
                      || 'endpoint => ''http://127.0.0.1:8080'')';
    END IF;
    IF EXISTS (SELECT FROM hf_fdw.models m WHERE m.name = _create_model.name) THEN
        RAISE EXCEPTION 'model "%" already exists', name
            USING ERRCODE = 'duplicate_object',
                  HINT = format('drop it first: SELECT hf_fdw.drop_model(%L)', name);
    END IF;

    IF task IS NULL THEN
        IF model_name IS NULL THEN
            RAISE EXCEPTION 'give task or model_name'
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'e.g. task => ''text-classification''; tasks: '
                          || (SELECT string_agg(t.task, ', ' ORDER BY t.task)
                              FROM hf_fdw.tasks t);
        END IF;
        RAISE EXCEPTION 'task is needed with model_name %', model_name
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'hf_fdw does not look tasks up on the Hub',
                  HINT = 'add task => ''<the model''''s pipeline tag>'', e.g. '
                      || '''text-classification''';
    END IF;
    SELECT * INTO spec FROM hf_fdw.tasks t WHERE t.task = _create_model.task;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown task "%"', task
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'tasks: ' || (SELECT string_agg(t.task, ', ' ORDER BY t.task)
                                       FROM hf_fdw.tasks t);
    END IF;
    IF model_name IS NULL AND spec.default_model IS NULL AND endpoint IS NULL THEN
        RAISE EXCEPTION 'task % has no default model', task
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'name one with model_name => ''<owner>/<model>'', or give '
                      || 'the endpoint of a deployment';
    END IF;

    -- The input columns this task reads, in order, named by the arguments.
    input_column := coalesce(input_column, 'text');
    FOREACH arg IN ARRAY spec.inputs LOOP
        col := CASE arg WHEN 'input_column' THEN input_column
                        WHEN 'context_column' THEN context_column
                        WHEN 'input_column2' THEN input_column2 END;
        IF col IS NULL OR btrim(col) = '' THEN
            RAISE EXCEPTION 'task % needs %', task, arg
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = format('name the column with %s => ''<column>''', arg);
        END IF;
        IF col = ANY (columns) OR col = predict THEN
            RAISE EXCEPTION 'column "%" is used twice', col
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'inputs and predict each need their own column';
        END IF;
        columns := columns || col;
        column_sql := column_sql || format('%I %s', col, spec.input_type);
        table_options := table_options || format('%I %L', arg, col);
    END LOOP;
    IF context_column IS NOT NULL AND NOT 'context_column' = ANY (spec.inputs) THEN
        RAISE EXCEPTION 'context_column applies to question-answering only'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF input_column2 IS NOT NULL AND NOT 'input_column2' = ANY (spec.inputs) THEN
        RAISE EXCEPTION 'input_column2 applies to sentence-similarity only'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    column_sql := column_sql || format('%I %s', predict, spec.predict_type);

    IF labels IS NOT NULL AND jsonb_typeof(labels) NOT IN ('array', 'object') THEN
        RAISE EXCEPTION 'labels must be a JSON array or object, not %',
            jsonb_typeof(labels)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'an array renames LABEL_0, LABEL_1, ... by position: '
                      || '''["ham", "spam"]''; an object renames by name';
    END IF;
    IF options IS NOT NULL AND jsonb_typeof(options) <> 'object' THEN
        RAISE EXCEPTION 'options must be a JSON object'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF parameters IS NOT NULL AND jsonb_typeof(parameters) <> 'object' THEN
        RAISE EXCEPTION 'parameters must be a JSON object'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'e.g. parameters => ''{"top_k": 1}''';
    END IF;
    endpoint := hf_fdw._check_endpoint(endpoint, 'endpoint');

    table_options := table_options
        || format('task %L', task)
        || format('target_column %L', predict);
    -- A model's own endpoint serves whatever model it serves: no default then.
    chosen_model := CASE WHEN model_name IS NOT NULL THEN model_name
                         WHEN endpoint IS NOT NULL THEN NULL
                         ELSE spec.default_model END;
    IF chosen_model IS NOT NULL THEN
        table_options := table_options || format('model %L', chosen_model);
    END IF;
    IF endpoint IS NOT NULL THEN
        table_options := table_options || format('endpoint %L', endpoint);
    END IF;
    IF candidate_labels IS NOT NULL THEN
        table_options := table_options
            || format('candidate_labels %L', to_jsonb(candidate_labels)::text);
    END IF;
    IF labels IS NOT NULL THEN
        table_options := table_options || format('labels %L', labels::text);
    END IF;
    IF parameters IS NOT NULL THEN
        table_options := table_options || format('parameters %L', parameters::text);
    END IF;
    IF options IS NOT NULL THEN
        table_options := table_options || format('options %L', options::text);
    END IF;

    EXECUTE format('CREATE FOREIGN TABLE %I.%I (%s) SERVER %I OPTIONS (%s)',
                   target_schema, name, array_to_string(column_sql, ', '),
                   engine, array_to_string(table_options, ', '));
    rel := format('%I.%I', target_schema, name)::regclass;

    model_row := ROW(name, rel, engine, task,
                     chosen_model, predict,
                     input_column, context_column, input_column2,
                     candidate_labels, labels, endpoint, options, parameters,
                     session_user, now());
    PERFORM hf_fdw._register_model(model_row);
    RETURN rel;
END;
$$;

CREATE FUNCTION hf_fdw.create_model(
    name text,
    predict text,
    engine text,
    task text DEFAULT NULL,
    model_name text DEFAULT NULL,
    input_column text DEFAULT 'text',
    context_column text DEFAULT NULL,
    input_column2 text DEFAULT NULL,
    candidate_labels text[] DEFAULT NULL,
    labels jsonb DEFAULT NULL,
    endpoint text DEFAULT NULL,
    options jsonb DEFAULT NULL,
    parameters jsonb DEFAULT NULL
)
RETURNS regclass
LANGUAGE sql
-- No SET search_path here: the table goes into the caller's current schema,
-- which only the caller's own search_path can tell.
AS $$
    SELECT hf_fdw._create_model(pg_catalog.current_schema(), name, predict, engine,
        task, model_name, input_column, context_column, input_column2,
        candidate_labels, labels, endpoint, options, parameters)
$$;

COMMENT ON FUNCTION hf_fdw.create_model(text, text, text, text, text, text, text,
    text, text[], jsonb, text, jsonb, jsonb) IS
    'Register a model: a foreign table whose rows are its predictions';

-- ---------------------------------------------------------------------------
-- describe_model: what a model is and how it is called. Never a key.
-- ---------------------------------------------------------------------------
CREATE FUNCTION hf_fdw.describe_model(name text)
RETURNS TABLE (property text, value text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    m hf_fdw.models;
    e hf_fdw.engines;
    key_source text;
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

    RETURN QUERY VALUES
        ('name', m.name),
        ('table', m.relation::text),
        ('engine', m.engine),
        ('engine endpoint', e.endpoint),
        ('task', m.task),
        ('model_name', m.model_name),
        ('endpoint', coalesce(m.endpoint,
                              e.endpoint || '/models/' || m.model_name)
                     || CASE WHEN m.endpoint IS NULL AND m.task IN
                                  ('sentence-similarity', 'feature-extraction')
                             THEN '/pipeline/' || m.task ELSE '' END),
        ('input_column', m.input_column),
        ('context_column', m.context_column),
        ('input_column2', m.input_column2),
        ('predict', m.predict),
        ('candidate_labels', m.candidate_labels::text),
        ('labels', m.labels::text),
        ('parameters', m.parameters::text),
        ('options', m.options::text),
        ('api_key', key_source),
        ('owner', m.owner::text),
        ('created', m.created::text);
END;
$$;

COMMENT ON FUNCTION hf_fdw.describe_model(text) IS
    'Describe a registered model; the API key is never shown';

-- ---------------------------------------------------------------------------
-- drop_model / drop_engine: remove a model's table, or an engine's server.
-- ---------------------------------------------------------------------------
CREATE FUNCTION hf_fdw.drop_model(name text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    rel regclass;
BEGIN
    SELECT m.relation INTO rel FROM hf_fdw.models m WHERE m.name = drop_model.name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'model "%" does not exist', name
            USING ERRCODE = 'undefined_object',
                  HINT = 'SELECT name FROM hf_fdw.models lists the models';
    END IF;
    -- The sql_drop trigger removes the catalog row with the table.
    EXECUTE format('DROP FOREIGN TABLE %s', rel);
END;
$$;

COMMENT ON FUNCTION hf_fdw.drop_model(text) IS
    'Drop a model and its foreign table';

CREATE FUNCTION hf_fdw.drop_engine(name text, cascade boolean DEFAULT false)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    users text;
BEGIN
    IF NOT EXISTS (SELECT FROM hf_fdw.engines e WHERE e.name = drop_engine.name) THEN
        RAISE EXCEPTION 'engine "%" does not exist', name
            USING ERRCODE = 'undefined_object',
                  HINT = 'SELECT name FROM hf_fdw.engines lists the engines';
    END IF;
    SELECT string_agg(format('%I', c.relname), ', ' ORDER BY c.relname) INTO users
    FROM pg_foreign_table ft
    JOIN pg_foreign_server s ON s.oid = ft.ftserver
    JOIN pg_class c ON c.oid = ft.ftrelid
    WHERE s.srvname = drop_engine.name;
    IF users IS NOT NULL AND NOT cascade THEN
        RAISE EXCEPTION 'engine "%" is used by: %', name, users
            USING ERRCODE = 'dependent_objects_still_exist',
                  HINT = format('drop those models first, or SELECT '
                                'hf_fdw.drop_engine(%L, cascade => true)', name);
    END IF;
    -- Dropping the server drops its user mappings and foreign tables; the
    -- sql_drop trigger removes their catalog rows.
    EXECUTE format('DROP SERVER %I CASCADE', name);
END;
$$;

COMMENT ON FUNCTION hf_fdw.drop_engine(text, boolean) IS
    'Drop an engine; with cascade => true also the models that use it';

-- ---------------------------------------------------------------------------
-- Event triggers: keep the catalog in step with DDL done by hand.
-- ---------------------------------------------------------------------------
CREATE FUNCTION hf_fdw._on_sql_drop()
RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    DELETE FROM hf_fdw.models m
    USING pg_event_trigger_dropped_objects() d
    WHERE d.object_type = 'foreign table' AND d.objid = m.relation::oid;

    DELETE FROM hf_fdw.engines e
    USING pg_event_trigger_dropped_objects() d
    WHERE d.object_type = 'server' AND d.object_identity = quote_ident(e.name);
END;
$$;

CREATE EVENT TRIGGER hf_fdw_sql_drop ON sql_drop
    WHEN TAG IN ('DROP FOREIGN TABLE', 'DROP SERVER', 'DROP SCHEMA', 'DROP OWNED')
    EXECUTE FUNCTION hf_fdw._on_sql_drop();

-- A foreign table created or altered on an hf_fdw server is planned once
-- with EXPLAIN, which makes the Python wrapper read and validate its
-- options: a table that cannot run fails its CREATE, and nothing is left.
CREATE FUNCTION hf_fdw._on_ddl_end()
RETURNS event_trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    cmd record;
    line text;
    reserved text;
BEGIN
    FOR cmd IN
        SELECT DISTINCT c.objid, ft.ftoptions
        FROM pg_event_trigger_ddl_commands() c
        JOIN pg_foreign_table ft ON ft.ftrelid = c.objid
        JOIN pg_foreign_server s ON s.oid = ft.ftserver
        WHERE c.object_type IN ('foreign table', 'foreign table column')
          AND EXISTS (SELECT FROM unnest(s.srvoptions) AS o
                      WHERE o LIKE 'wrapper=hf\_fdw.%')
    LOOP
        -- Multicorn merges table, server and user mapping options into one;
        -- a table must not set what belongs to its engine.
        SELECT string_agg(o.option_name, ', ') INTO reserved
        FROM pg_options_to_table(cmd.ftoptions) AS o
        WHERE o.option_name IN ('wrapper', 'engine_name', 'engine_endpoint',
                                'engine_options', 'api_key', 'api_key_env',
                                'allow_private_urls');
        IF reserved IS NOT NULL THEN
            RAISE EXCEPTION 'a model''s table cannot set %', reserved
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'these belong to the engine: its owner sets them '
                          || 'with hf_fdw.create_engine or hf_fdw.set_api_key';
        END IF;
        FOR line IN EXECUTE format('EXPLAIN SELECT * FROM %s', cmd.objid::regclass)
        LOOP
            NULL;
        END LOOP;
    END LOOP;
END;
$$;

CREATE EVENT TRIGGER hf_fdw_ddl_end ON ddl_command_end
    WHEN TAG IN ('CREATE FOREIGN TABLE', 'ALTER FOREIGN TABLE')
    EXECUTE FUNCTION hf_fdw._on_ddl_end();

-- A user mapping of an engine's server holds its key and nothing else: its
-- options reach the Python wrapper merged over the server's, so any other
-- option would let a role with USAGE on the engine redirect its requests,
-- read the server's environment, or pick another wrapper class. Runs as the
-- extension's owner, since only superusers may read pg_user_mapping.
CREATE FUNCTION hf_fdw._on_user_mapping()
RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    extra text;
BEGIN
    SELECT string_agg(DISTINCT o.option_name, ', ') INTO extra
    FROM pg_event_trigger_ddl_commands() c
    JOIN pg_user_mapping um ON um.oid = c.objid
    JOIN pg_foreign_server s ON s.oid = um.umserver
    CROSS JOIN LATERAL pg_options_to_table(um.umoptions) AS o
    WHERE c.object_type = 'user mapping'
      AND EXISTS (SELECT FROM unnest(s.srvoptions) AS w
                  WHERE w LIKE 'wrapper=hf\_fdw.%')
      AND o.option_name <> 'api_key';
    IF extra IS NOT NULL THEN
        RAISE EXCEPTION 'a user mapping of an hf_fdw engine may hold only api_key'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'refused: ' || extra,
                  HINT = 'store a key with hf_fdw.set_api_key(engine, key, '
                      || 'for_role)';
    END IF;
END;
$$;

CREATE EVENT TRIGGER hf_fdw_user_mapping ON ddl_command_end
    WHEN TAG IN ('CREATE USER MAPPING', 'ALTER USER MAPPING')
    EXECUTE FUNCTION hf_fdw._on_user_mapping();

-- An engine's server renamed or re-optioned by hand (ALTER SERVER) keeps its
-- catalog row in step: the new name, endpoint and options, checked as
-- create_engine checks them.
CREATE FUNCTION hf_fdw._on_alter_server()
RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    server record;
    old_name text;
    engine_options jsonb;
BEGIN
    FOR server IN
        SELECT s.srvname, s.srvoptions
        FROM pg_event_trigger_ddl_commands() c
        JOIN pg_foreign_server s ON s.oid = c.objid
        WHERE c.object_type = 'server'
          AND 'wrapper=hf_fdw.HuggingFaceFDW' = ANY (s.srvoptions)
    LOOP
        SELECT o.option_value INTO old_name
        FROM pg_options_to_table(server.srvoptions) AS o
        WHERE o.option_name = 'engine_name';
        SELECT o.option_value::jsonb INTO engine_options
        FROM pg_options_to_table(server.srvoptions) AS o
        WHERE o.option_name = 'engine_options';
        PERFORM hf_fdw._check_settings(coalesce(engine_options, '{}'));

        IF old_name IS NOT NULL AND old_name <> server.srvname THEN
            UPDATE hf_fdw.engines SET name = server.srvname WHERE name = old_name;
            UPDATE hf_fdw.models SET engine = server.srvname WHERE engine = old_name;
            EXECUTE format('ALTER SERVER %I OPTIONS (SET engine_name %L)',
                           server.srvname, server.srvname);
        END IF;
        UPDATE hf_fdw.engines e
        SET endpoint = coalesce(
                (SELECT rtrim(hf_fdw._check_endpoint(o.option_value,
                                                     'engine endpoint'), '/')
                 FROM pg_options_to_table(server.srvoptions) AS o
                 WHERE o.option_name = 'engine_endpoint'),
                'https://router.huggingface.co/hf-inference'),
            options = coalesce(engine_options, '{}')
        WHERE e.name = server.srvname;
    END LOOP;
END;
$$;

CREATE EVENT TRIGGER hf_fdw_alter_server ON ddl_command_end
    WHEN TAG IN ('ALTER SERVER')
    EXECUTE FUNCTION hf_fdw._on_alter_server();
