--
-- PostgreSQL database dump
--


-- Dumped from database version 18.4
-- Dumped by pg_dump version 18.4

SET statement_timeout = 0;
SET lock_timeout = 0;
SET idle_in_transaction_session_timeout = 0;
SET transaction_timeout = 0;
SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;
SELECT pg_catalog.set_config('search_path', '', false);
SET check_function_bodies = false;
SET xmloption = content;
SET client_min_messages = warning;
SET row_security = off;

SET default_tablespace = '';

SET default_table_access_method = heap;

--
-- Name: alembic_version; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.alembic_version (
    version_num character varying(32) NOT NULL
);


--
-- Name: ap_activities; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.ap_activities (
    id bigint NOT NULL,
    uri character varying(2000) NOT NULL,
    app character varying(20) NOT NULL,
    activity_type character varying(40) NOT NULL,
    object_uri character varying(2000),
    visibility character varying(20) NOT NULL,
    document jsonb NOT NULL,
    target_inboxes jsonb DEFAULT '[]'::jsonb NOT NULL,
    state character varying(20) DEFAULT 'pending'::character varying NOT NULL,
    attempts integer DEFAULT 0 NOT NULL,
    next_attempt_at timestamp with time zone DEFAULT now() NOT NULL,
    last_error text,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    processed_at timestamp with time zone
);


--
-- Name: ap_activities_id_seq; Type: SEQUENCE; Schema: public; Owner: -
--

CREATE SEQUENCE public.ap_activities_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;


--
-- Name: ap_activities_id_seq; Type: SEQUENCE OWNED BY; Schema: public; Owner: -
--

ALTER SEQUENCE public.ap_activities_id_seq OWNED BY public.ap_activities.id;


--
-- Name: ap_blocks; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.ap_blocks (
    id bigint NOT NULL,
    kind character varying(10) NOT NULL,
    value character varying(2000) NOT NULL,
    reason text,
    created_at timestamp with time zone DEFAULT now() NOT NULL
);


--
-- Name: ap_blocks_id_seq; Type: SEQUENCE; Schema: public; Owner: -
--

CREATE SEQUENCE public.ap_blocks_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;


--
-- Name: ap_blocks_id_seq; Type: SEQUENCE OWNED BY; Schema: public; Owner: -
--

ALTER SEQUENCE public.ap_blocks_id_seq OWNED BY public.ap_blocks.id;


--
-- Name: ap_deliveries; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.ap_deliveries (
    id bigint NOT NULL,
    activity_id bigint NOT NULL,
    inbox character varying(2000) NOT NULL,
    state character varying(20) DEFAULT 'pending'::character varying NOT NULL,
    attempts integer DEFAULT 0 NOT NULL,
    next_attempt_at timestamp with time zone DEFAULT now() NOT NULL,
    last_status smallint,
    last_error text,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    delivered_at timestamp with time zone
);


--
-- Name: ap_deliveries_id_seq; Type: SEQUENCE; Schema: public; Owner: -
--

CREATE SEQUENCE public.ap_deliveries_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;


--
-- Name: ap_deliveries_id_seq; Type: SEQUENCE OWNED BY; Schema: public; Owner: -
--

ALTER SEQUENCE public.ap_deliveries_id_seq OWNED BY public.ap_deliveries.id;


--
-- Name: ap_followers; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.ap_followers (
    id bigint NOT NULL,
    app character varying(20) NOT NULL,
    remote_actor_id bigint NOT NULL,
    follow_uri character varying(2000) NOT NULL,
    inbox character varying(2000) NOT NULL,
    shared_inbox character varying(2000),
    created_at timestamp with time zone DEFAULT now() NOT NULL
);


--
-- Name: ap_followers_id_seq; Type: SEQUENCE; Schema: public; Owner: -
--

CREATE SEQUENCE public.ap_followers_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;


--
-- Name: ap_followers_id_seq; Type: SEQUENCE OWNED BY; Schema: public; Owner: -
--

ALTER SEQUENCE public.ap_followers_id_seq OWNED BY public.ap_followers.id;


--
-- Name: ap_following; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.ap_following (
    id bigint NOT NULL,
    app character varying(20) NOT NULL,
    remote_actor_id bigint NOT NULL,
    follow_uri character varying(2000) NOT NULL,
    state character varying(20) DEFAULT 'pending'::character varying NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    accepted_at timestamp with time zone
);


--
-- Name: ap_following_id_seq; Type: SEQUENCE; Schema: public; Owner: -
--

CREATE SEQUENCE public.ap_following_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;


--
-- Name: ap_following_id_seq; Type: SEQUENCE OWNED BY; Schema: public; Owner: -
--

ALTER SEQUENCE public.ap_following_id_seq OWNED BY public.ap_following.id;


--
-- Name: ap_inbox_items; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.ap_inbox_items (
    id bigint NOT NULL,
    activity_uri character varying(2000) NOT NULL,
    activity_type character varying(40) NOT NULL,
    app character varying(20),
    actor_uri character varying(2000) NOT NULL,
    document jsonb NOT NULL,
    state character varying(20) DEFAULT 'pending'::character varying NOT NULL,
    attempts integer DEFAULT 0 NOT NULL,
    next_attempt_at timestamp with time zone DEFAULT now() NOT NULL,
    last_error text,
    received_at timestamp with time zone DEFAULT now() NOT NULL,
    processed_at timestamp with time zone
);


--
-- Name: ap_inbox_items_id_seq; Type: SEQUENCE; Schema: public; Owner: -
--

CREATE SEQUENCE public.ap_inbox_items_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;


--
-- Name: ap_inbox_items_id_seq; Type: SEQUENCE OWNED BY; Schema: public; Owner: -
--

ALTER SEQUENCE public.ap_inbox_items_id_seq OWNED BY public.ap_inbox_items.id;


--
-- Name: ap_keypairs; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.ap_keypairs (
    id bigint NOT NULL,
    public_key_pem text NOT NULL,
    private_key_encrypted text NOT NULL,
    active boolean DEFAULT true NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL
);


--
-- Name: ap_keypairs_id_seq; Type: SEQUENCE; Schema: public; Owner: -
--

CREATE SEQUENCE public.ap_keypairs_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;


--
-- Name: ap_keypairs_id_seq; Type: SEQUENCE OWNED BY; Schema: public; Owner: -
--

ALTER SEQUENCE public.ap_keypairs_id_seq OWNED BY public.ap_keypairs.id;


--
-- Name: ap_objects; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.ap_objects (
    id bigint NOT NULL,
    uri character varying(2000) NOT NULL,
    app character varying(20) NOT NULL,
    object_type character varying(40) NOT NULL,
    document jsonb NOT NULL,
    published_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone,
    deleted_at timestamp with time zone
);


--
-- Name: ap_objects_id_seq; Type: SEQUENCE; Schema: public; Owner: -
--

CREATE SEQUENCE public.ap_objects_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;


--
-- Name: ap_objects_id_seq; Type: SEQUENCE OWNED BY; Schema: public; Owner: -
--

ALTER SEQUENCE public.ap_objects_id_seq OWNED BY public.ap_objects.id;


--
-- Name: ap_reactions; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.ap_reactions (
    id bigint NOT NULL,
    activity_uri character varying(2000) NOT NULL,
    kind character varying(20) NOT NULL,
    object_uri character varying(2000) NOT NULL,
    actor_uri character varying(2000) NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL
);


--
-- Name: ap_reactions_id_seq; Type: SEQUENCE; Schema: public; Owner: -
--

CREATE SEQUENCE public.ap_reactions_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;


--
-- Name: ap_reactions_id_seq; Type: SEQUENCE OWNED BY; Schema: public; Owner: -
--

ALTER SEQUENCE public.ap_reactions_id_seq OWNED BY public.ap_reactions.id;


--
-- Name: ap_remote_actors; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.ap_remote_actors (
    id bigint NOT NULL,
    uri character varying(2000) NOT NULL,
    domain character varying(255) NOT NULL,
    actor_type character varying(40) NOT NULL,
    preferred_username character varying(255),
    name text,
    inbox character varying(2000) NOT NULL,
    shared_inbox character varying(2000),
    key_id character varying(2000),
    public_key_pem text,
    document jsonb NOT NULL,
    fetched_at timestamp with time zone DEFAULT now() NOT NULL,
    deleted_at timestamp with time zone,
    handle text
);


--
-- Name: ap_remote_actors_id_seq; Type: SEQUENCE; Schema: public; Owner: -
--

CREATE SEQUENCE public.ap_remote_actors_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;


--
-- Name: ap_remote_actors_id_seq; Type: SEQUENCE OWNED BY; Schema: public; Owner: -
--

ALTER SEQUENCE public.ap_remote_actors_id_seq OWNED BY public.ap_remote_actors.id;


--
-- Name: ap_remote_objects; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.ap_remote_objects (
    id bigint NOT NULL,
    uri character varying(2000) NOT NULL,
    actor_uri character varying(2000) NOT NULL,
    object_type character varying(40) NOT NULL,
    document jsonb NOT NULL,
    published_at timestamp with time zone,
    received_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone,
    deleted_at timestamp with time zone
);


--
-- Name: ap_remote_objects_id_seq; Type: SEQUENCE; Schema: public; Owner: -
--

CREATE SEQUENCE public.ap_remote_objects_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;


--
-- Name: ap_remote_objects_id_seq; Type: SEQUENCE OWNED BY; Schema: public; Owner: -
--

ALTER SEQUENCE public.ap_remote_objects_id_seq OWNED BY public.ap_remote_objects.id;


--
-- Name: key_values; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.key_values (
    key character varying(200) NOT NULL,
    value jsonb NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL
);


--
-- Name: magic_links; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.magic_links (
    id bigint NOT NULL,
    token_hash character varying(64) NOT NULL,
    purpose character varying(20) NOT NULL,
    email character varying(320) NOT NULL,
    user_id bigint,
    next_url text,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    expires_at timestamp with time zone NOT NULL,
    used_at timestamp with time zone,
    CONSTRAINT ck_magic_links_purpose CHECK (((purpose)::text = ANY ((ARRAY['sign_in'::character varying, 'change_email'::character varying])::text[])))
);


--
-- Name: magic_links_id_seq; Type: SEQUENCE; Schema: public; Owner: -
--

CREATE SEQUENCE public.magic_links_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;


--
-- Name: magic_links_id_seq; Type: SEQUENCE OWNED BY; Schema: public; Owner: -
--

ALTER SEQUENCE public.magic_links_id_seq OWNED BY public.magic_links.id;


--
-- Name: menu_nodes; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.menu_nodes (
    id integer NOT NULL,
    parent_id integer,
    label character varying(100) NOT NULL,
    url character varying(2000) NOT NULL,
    "position" integer NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL
);


--
-- Name: menu_nodes_id_seq; Type: SEQUENCE; Schema: public; Owner: -
--

CREATE SEQUENCE public.menu_nodes_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;


--
-- Name: menu_nodes_id_seq; Type: SEQUENCE OWNED BY; Schema: public; Owner: -
--

ALTER SEQUENCE public.menu_nodes_id_seq OWNED BY public.menu_nodes.id;


--
-- Name: oauth_authorization_codes; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.oauth_authorization_codes (
    code_hash character varying(64) NOT NULL,
    client_id character varying(100) NOT NULL,
    user_id bigint NOT NULL,
    grant_id bigint NOT NULL,
    redirect_uri text NOT NULL,
    scope text NOT NULL,
    nonce text,
    code_challenge character varying(128) NOT NULL,
    code_challenge_method character varying(10) NOT NULL,
    auth_time timestamp with time zone NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    expires_at timestamp with time zone NOT NULL,
    used_at timestamp with time zone
);


--
-- Name: oauth_clients; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.oauth_clients (
    client_id character varying(100) NOT NULL,
    client_secret_hash character varying(64),
    name character varying(200) NOT NULL,
    redirect_uris text[] NOT NULL,
    post_logout_redirect_uris text[] DEFAULT '{}'::text[] NOT NULL,
    backchannel_logout_uri text,
    scope text DEFAULT 'openid profile email'::text NOT NULL,
    token_endpoint_auth_method character varying(40) DEFAULT 'client_secret_basic'::character varying NOT NULL,
    first_party boolean DEFAULT false NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT ck_oauth_clients_auth_method CHECK (((token_endpoint_auth_method)::text = ANY ((ARRAY['client_secret_basic'::character varying, 'client_secret_post'::character varying, 'none'::character varying])::text[])))
);


--
-- Name: oauth_consents; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.oauth_consents (
    user_id bigint NOT NULL,
    client_id character varying(100) NOT NULL,
    scope text NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL
);


--
-- Name: oauth_grants; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.oauth_grants (
    id bigint NOT NULL,
    user_id bigint NOT NULL,
    client_id character varying(100) NOT NULL,
    sso_session_id bigint,
    scope text NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    revoked_at timestamp with time zone,
    revoked_reason character varying(100)
);


--
-- Name: oauth_grants_id_seq; Type: SEQUENCE; Schema: public; Owner: -
--

CREATE SEQUENCE public.oauth_grants_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;


--
-- Name: oauth_grants_id_seq; Type: SEQUENCE OWNED BY; Schema: public; Owner: -
--

ALTER SEQUENCE public.oauth_grants_id_seq OWNED BY public.oauth_grants.id;


--
-- Name: oauth_signing_keys; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.oauth_signing_keys (
    kid character varying(64) NOT NULL,
    private_key_encrypted text NOT NULL,
    public_jwk jsonb NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    retired_at timestamp with time zone
);


--
-- Name: oauth_tokens; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.oauth_tokens (
    id bigint NOT NULL,
    grant_id bigint NOT NULL,
    client_id character varying(100) NOT NULL,
    user_id bigint NOT NULL,
    access_token_hash character varying(64) NOT NULL,
    refresh_token_hash character varying(64),
    scope text NOT NULL,
    issued_at timestamp with time zone DEFAULT now() NOT NULL,
    access_expires_at timestamp with time zone NOT NULL,
    refresh_expires_at timestamp with time zone,
    refresh_used_at timestamp with time zone,
    revoked_at timestamp with time zone
);


--
-- Name: oauth_tokens_id_seq; Type: SEQUENCE; Schema: public; Owner: -
--

CREATE SEQUENCE public.oauth_tokens_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;


--
-- Name: oauth_tokens_id_seq; Type: SEQUENCE OWNED BY; Schema: public; Owner: -
--

ALTER SEQUENCE public.oauth_tokens_id_seq OWNED BY public.oauth_tokens.id;


--
-- Name: outbox_events; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.outbox_events (
    id bigint NOT NULL,
    kind character varying(60) NOT NULL,
    payload jsonb NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    next_attempt_at timestamp with time zone DEFAULT now() NOT NULL,
    attempts integer DEFAULT 0 NOT NULL,
    completed_at timestamp with time zone,
    failed_at timestamp with time zone,
    last_error text
);


--
-- Name: outbox_events_id_seq; Type: SEQUENCE; Schema: public; Owner: -
--

CREATE SEQUENCE public.outbox_events_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;


--
-- Name: outbox_events_id_seq; Type: SEQUENCE OWNED BY; Schema: public; Owner: -
--

ALTER SEQUENCE public.outbox_events_id_seq OWNED BY public.outbox_events.id;


--
-- Name: sso_sessions; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.sso_sessions (
    id bigint NOT NULL,
    token_hash character varying(64) NOT NULL,
    user_id bigint NOT NULL,
    auth_time timestamp with time zone DEFAULT now() NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    last_seen_at timestamp with time zone DEFAULT now() NOT NULL,
    revoked_at timestamp with time zone,
    user_agent character varying(300) DEFAULT ''::character varying NOT NULL,
    ip_address character varying(64) DEFAULT ''::character varying NOT NULL
);


--
-- Name: sso_sessions_id_seq; Type: SEQUENCE; Schema: public; Owner: -
--

CREATE SEQUENCE public.sso_sessions_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;


--
-- Name: sso_sessions_id_seq; Type: SEQUENCE OWNED BY; Schema: public; Owner: -
--

ALTER SEQUENCE public.sso_sessions_id_seq OWNED BY public.sso_sessions.id;


--
-- Name: users; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.users (
    id bigint NOT NULL,
    email character varying(320) NOT NULL,
    username character varying(30),
    display_name character varying(100) DEFAULT ''::character varying NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    last_login_at timestamp with time zone,
    email_verified_at timestamp with time zone,
    password_hash character varying(200),
    CONSTRAINT ck_users_email_has_at CHECK ((POSITION(('@'::text) IN (email)) > 1)),
    CONSTRAINT ck_users_username_format CHECK (((username)::text ~ '^[a-z0-9_]{1,30}$'::text))
);


--
-- Name: users_id_seq; Type: SEQUENCE; Schema: public; Owner: -
--

CREATE SEQUENCE public.users_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;


--
-- Name: users_id_seq; Type: SEQUENCE OWNED BY; Schema: public; Owner: -
--

ALTER SEQUENCE public.users_id_seq OWNED BY public.users.id;


--
-- Name: ap_activities id; Type: DEFAULT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.ap_activities ALTER COLUMN id SET DEFAULT nextval('public.ap_activities_id_seq'::regclass);


--
-- Name: ap_blocks id; Type: DEFAULT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.ap_blocks ALTER COLUMN id SET DEFAULT nextval('public.ap_blocks_id_seq'::regclass);


--
-- Name: ap_deliveries id; Type: DEFAULT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.ap_deliveries ALTER COLUMN id SET DEFAULT nextval('public.ap_deliveries_id_seq'::regclass);


--
-- Name: ap_followers id; Type: DEFAULT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.ap_followers ALTER COLUMN id SET DEFAULT nextval('public.ap_followers_id_seq'::regclass);


--
-- Name: ap_following id; Type: DEFAULT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.ap_following ALTER COLUMN id SET DEFAULT nextval('public.ap_following_id_seq'::regclass);


--
-- Name: ap_inbox_items id; Type: DEFAULT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.ap_inbox_items ALTER COLUMN id SET DEFAULT nextval('public.ap_inbox_items_id_seq'::regclass);


--
-- Name: ap_keypairs id; Type: DEFAULT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.ap_keypairs ALTER COLUMN id SET DEFAULT nextval('public.ap_keypairs_id_seq'::regclass);


--
-- Name: ap_objects id; Type: DEFAULT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.ap_objects ALTER COLUMN id SET DEFAULT nextval('public.ap_objects_id_seq'::regclass);


--
-- Name: ap_reactions id; Type: DEFAULT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.ap_reactions ALTER COLUMN id SET DEFAULT nextval('public.ap_reactions_id_seq'::regclass);


--
-- Name: ap_remote_actors id; Type: DEFAULT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.ap_remote_actors ALTER COLUMN id SET DEFAULT nextval('public.ap_remote_actors_id_seq'::regclass);


--
-- Name: ap_remote_objects id; Type: DEFAULT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.ap_remote_objects ALTER COLUMN id SET DEFAULT nextval('public.ap_remote_objects_id_seq'::regclass);


--
-- Name: magic_links id; Type: DEFAULT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.magic_links ALTER COLUMN id SET DEFAULT nextval('public.magic_links_id_seq'::regclass);


--
-- Name: menu_nodes id; Type: DEFAULT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.menu_nodes ALTER COLUMN id SET DEFAULT nextval('public.menu_nodes_id_seq'::regclass);


--
-- Name: oauth_grants id; Type: DEFAULT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.oauth_grants ALTER COLUMN id SET DEFAULT nextval('public.oauth_grants_id_seq'::regclass);


--
-- Name: oauth_tokens id; Type: DEFAULT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.oauth_tokens ALTER COLUMN id SET DEFAULT nextval('public.oauth_tokens_id_seq'::regclass);


--
-- Name: outbox_events id; Type: DEFAULT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.outbox_events ALTER COLUMN id SET DEFAULT nextval('public.outbox_events_id_seq'::regclass);


--
-- Name: sso_sessions id; Type: DEFAULT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.sso_sessions ALTER COLUMN id SET DEFAULT nextval('public.sso_sessions_id_seq'::regclass);


--
-- Name: users id; Type: DEFAULT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.users ALTER COLUMN id SET DEFAULT nextval('public.users_id_seq'::regclass);


--
-- Name: alembic_version alembic_version_pkc; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.alembic_version
    ADD CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num);


--
-- Name: ap_activities pk_ap_activities; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.ap_activities
    ADD CONSTRAINT pk_ap_activities PRIMARY KEY (id);


--
-- Name: ap_blocks pk_ap_blocks; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.ap_blocks
    ADD CONSTRAINT pk_ap_blocks PRIMARY KEY (id);


--
-- Name: ap_deliveries pk_ap_deliveries; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.ap_deliveries
    ADD CONSTRAINT pk_ap_deliveries PRIMARY KEY (id);


--
-- Name: ap_followers pk_ap_followers; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.ap_followers
    ADD CONSTRAINT pk_ap_followers PRIMARY KEY (id);


--
-- Name: ap_following pk_ap_following; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.ap_following
    ADD CONSTRAINT pk_ap_following PRIMARY KEY (id);


--
-- Name: ap_inbox_items pk_ap_inbox_items; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.ap_inbox_items
    ADD CONSTRAINT pk_ap_inbox_items PRIMARY KEY (id);


--
-- Name: ap_keypairs pk_ap_keypairs; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.ap_keypairs
    ADD CONSTRAINT pk_ap_keypairs PRIMARY KEY (id);


--
-- Name: ap_objects pk_ap_objects; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.ap_objects
    ADD CONSTRAINT pk_ap_objects PRIMARY KEY (id);


--
-- Name: ap_reactions pk_ap_reactions; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.ap_reactions
    ADD CONSTRAINT pk_ap_reactions PRIMARY KEY (id);


--
-- Name: ap_remote_actors pk_ap_remote_actors; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.ap_remote_actors
    ADD CONSTRAINT pk_ap_remote_actors PRIMARY KEY (id);


--
-- Name: ap_remote_objects pk_ap_remote_objects; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.ap_remote_objects
    ADD CONSTRAINT pk_ap_remote_objects PRIMARY KEY (id);


--
-- Name: key_values pk_key_values; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.key_values
    ADD CONSTRAINT pk_key_values PRIMARY KEY (key);


--
-- Name: magic_links pk_magic_links; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.magic_links
    ADD CONSTRAINT pk_magic_links PRIMARY KEY (id);


--
-- Name: menu_nodes pk_menu_nodes; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.menu_nodes
    ADD CONSTRAINT pk_menu_nodes PRIMARY KEY (id);


--
-- Name: oauth_authorization_codes pk_oauth_authorization_codes; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.oauth_authorization_codes
    ADD CONSTRAINT pk_oauth_authorization_codes PRIMARY KEY (code_hash);


--
-- Name: oauth_clients pk_oauth_clients; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.oauth_clients
    ADD CONSTRAINT pk_oauth_clients PRIMARY KEY (client_id);


--
-- Name: oauth_consents pk_oauth_consents; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.oauth_consents
    ADD CONSTRAINT pk_oauth_consents PRIMARY KEY (user_id, client_id);


--
-- Name: oauth_grants pk_oauth_grants; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.oauth_grants
    ADD CONSTRAINT pk_oauth_grants PRIMARY KEY (id);


--
-- Name: oauth_signing_keys pk_oauth_signing_keys; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.oauth_signing_keys
    ADD CONSTRAINT pk_oauth_signing_keys PRIMARY KEY (kid);


--
-- Name: oauth_tokens pk_oauth_tokens; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.oauth_tokens
    ADD CONSTRAINT pk_oauth_tokens PRIMARY KEY (id);


--
-- Name: outbox_events pk_outbox_events; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.outbox_events
    ADD CONSTRAINT pk_outbox_events PRIMARY KEY (id);


--
-- Name: sso_sessions pk_sso_sessions; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.sso_sessions
    ADD CONSTRAINT pk_sso_sessions PRIMARY KEY (id);


--
-- Name: users pk_users; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.users
    ADD CONSTRAINT pk_users PRIMARY KEY (id);


--
-- Name: ap_activities uq_ap_activities_uri; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.ap_activities
    ADD CONSTRAINT uq_ap_activities_uri UNIQUE (uri);


--
-- Name: ap_blocks uq_ap_blocks_kind_value; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.ap_blocks
    ADD CONSTRAINT uq_ap_blocks_kind_value UNIQUE (kind, value);


--
-- Name: ap_deliveries uq_ap_deliveries_activity_id_inbox; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.ap_deliveries
    ADD CONSTRAINT uq_ap_deliveries_activity_id_inbox UNIQUE (activity_id, inbox);


--
-- Name: ap_followers uq_ap_followers_app_remote_actor_id; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.ap_followers
    ADD CONSTRAINT uq_ap_followers_app_remote_actor_id UNIQUE (app, remote_actor_id);


--
-- Name: ap_following uq_ap_following_app_remote_actor_id; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.ap_following
    ADD CONSTRAINT uq_ap_following_app_remote_actor_id UNIQUE (app, remote_actor_id);


--
-- Name: ap_inbox_items uq_ap_inbox_items_activity_uri; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.ap_inbox_items
    ADD CONSTRAINT uq_ap_inbox_items_activity_uri UNIQUE (activity_uri);


--
-- Name: ap_objects uq_ap_objects_uri; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.ap_objects
    ADD CONSTRAINT uq_ap_objects_uri UNIQUE (uri);


--
-- Name: ap_reactions uq_ap_reactions_activity_uri; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.ap_reactions
    ADD CONSTRAINT uq_ap_reactions_activity_uri UNIQUE (activity_uri);


--
-- Name: ap_remote_actors uq_ap_remote_actors_uri; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.ap_remote_actors
    ADD CONSTRAINT uq_ap_remote_actors_uri UNIQUE (uri);


--
-- Name: ap_remote_objects uq_ap_remote_objects_uri; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.ap_remote_objects
    ADD CONSTRAINT uq_ap_remote_objects_uri UNIQUE (uri);


--
-- Name: magic_links uq_magic_links_token_hash; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.magic_links
    ADD CONSTRAINT uq_magic_links_token_hash UNIQUE (token_hash);


--
-- Name: oauth_tokens uq_oauth_tokens_access_token_hash; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.oauth_tokens
    ADD CONSTRAINT uq_oauth_tokens_access_token_hash UNIQUE (access_token_hash);


--
-- Name: oauth_tokens uq_oauth_tokens_refresh_token_hash; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.oauth_tokens
    ADD CONSTRAINT uq_oauth_tokens_refresh_token_hash UNIQUE (refresh_token_hash);


--
-- Name: sso_sessions uq_sso_sessions_token_hash; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.sso_sessions
    ADD CONSTRAINT uq_sso_sessions_token_hash UNIQUE (token_hash);


--
-- Name: users uq_users_username; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.users
    ADD CONSTRAINT uq_users_username UNIQUE (username);


--
-- Name: ix_ap_activities_app_visibility_id; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ix_ap_activities_app_visibility_id ON public.ap_activities USING btree (app, visibility, id);


--
-- Name: ix_ap_activities_pending; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ix_ap_activities_pending ON public.ap_activities USING btree (next_attempt_at) WHERE ((state)::text = 'pending'::text);


--
-- Name: ix_ap_deliveries_pending; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ix_ap_deliveries_pending ON public.ap_deliveries USING btree (next_attempt_at) WHERE ((state)::text = 'pending'::text);


--
-- Name: ix_ap_deliveries_state; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ix_ap_deliveries_state ON public.ap_deliveries USING btree (state);


--
-- Name: ix_ap_followers_app_id; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ix_ap_followers_app_id ON public.ap_followers USING btree (app, id);


--
-- Name: ix_ap_following_app_id; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ix_ap_following_app_id ON public.ap_following USING btree (app, id);


--
-- Name: ix_ap_inbox_items_pending; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ix_ap_inbox_items_pending ON public.ap_inbox_items USING btree (next_attempt_at) WHERE ((state)::text = 'pending'::text);


--
-- Name: ix_ap_objects_app_published; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ix_ap_objects_app_published ON public.ap_objects USING btree (app, published_at);


--
-- Name: ix_ap_reactions_object_uri; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ix_ap_reactions_object_uri ON public.ap_reactions USING btree (object_uri);


--
-- Name: ix_ap_remote_actors_domain; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ix_ap_remote_actors_domain ON public.ap_remote_actors USING btree (domain);


--
-- Name: ix_ap_remote_actors_key_id; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ix_ap_remote_actors_key_id ON public.ap_remote_actors USING btree (key_id);


--
-- Name: ix_ap_remote_objects_actor_uri; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ix_ap_remote_objects_actor_uri ON public.ap_remote_objects USING btree (actor_uri);


--
-- Name: ix_magic_links_email_created; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ix_magic_links_email_created ON public.magic_links USING btree (email, created_at);


--
-- Name: ix_menu_nodes_parent_id; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ix_menu_nodes_parent_id ON public.menu_nodes USING btree (parent_id);


--
-- Name: ix_oauth_authorization_codes_grant_id; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ix_oauth_authorization_codes_grant_id ON public.oauth_authorization_codes USING btree (grant_id);


--
-- Name: ix_oauth_grants_sso_session_id; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ix_oauth_grants_sso_session_id ON public.oauth_grants USING btree (sso_session_id);


--
-- Name: ix_oauth_grants_user_id; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ix_oauth_grants_user_id ON public.oauth_grants USING btree (user_id);


--
-- Name: ix_oauth_tokens_grant_id; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ix_oauth_tokens_grant_id ON public.oauth_tokens USING btree (grant_id);


--
-- Name: ix_outbox_events_kind_created; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ix_outbox_events_kind_created ON public.outbox_events USING btree (kind, created_at);


--
-- Name: ix_outbox_events_pending; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ix_outbox_events_pending ON public.outbox_events USING btree (next_attempt_at) WHERE ((completed_at IS NULL) AND (failed_at IS NULL));


--
-- Name: ix_sso_sessions_user_id; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ix_sso_sessions_user_id ON public.sso_sessions USING btree (user_id);


--
-- Name: uq_users_email_lower; Type: INDEX; Schema: public; Owner: -
--

CREATE UNIQUE INDEX uq_users_email_lower ON public.users USING btree (lower((email)::text));


--
-- Name: ap_deliveries fk_ap_deliveries_activity_id_ap_activities; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.ap_deliveries
    ADD CONSTRAINT fk_ap_deliveries_activity_id_ap_activities FOREIGN KEY (activity_id) REFERENCES public.ap_activities(id) ON DELETE CASCADE;


--
-- Name: ap_followers fk_ap_followers_remote_actor_id_ap_remote_actors; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.ap_followers
    ADD CONSTRAINT fk_ap_followers_remote_actor_id_ap_remote_actors FOREIGN KEY (remote_actor_id) REFERENCES public.ap_remote_actors(id) ON DELETE CASCADE;


--
-- Name: ap_following fk_ap_following_remote_actor_id_ap_remote_actors; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.ap_following
    ADD CONSTRAINT fk_ap_following_remote_actor_id_ap_remote_actors FOREIGN KEY (remote_actor_id) REFERENCES public.ap_remote_actors(id) ON DELETE CASCADE;


--
-- Name: magic_links fk_magic_links_user_id_users; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.magic_links
    ADD CONSTRAINT fk_magic_links_user_id_users FOREIGN KEY (user_id) REFERENCES public.users(id) ON DELETE CASCADE;


--
-- Name: menu_nodes fk_menu_nodes_parent_id_menu_nodes; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.menu_nodes
    ADD CONSTRAINT fk_menu_nodes_parent_id_menu_nodes FOREIGN KEY (parent_id) REFERENCES public.menu_nodes(id) ON DELETE CASCADE;


--
-- Name: oauth_authorization_codes fk_oauth_authorization_codes_client_id_oauth_clients; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.oauth_authorization_codes
    ADD CONSTRAINT fk_oauth_authorization_codes_client_id_oauth_clients FOREIGN KEY (client_id) REFERENCES public.oauth_clients(client_id) ON DELETE CASCADE;


--
-- Name: oauth_authorization_codes fk_oauth_authorization_codes_grant_id_oauth_grants; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.oauth_authorization_codes
    ADD CONSTRAINT fk_oauth_authorization_codes_grant_id_oauth_grants FOREIGN KEY (grant_id) REFERENCES public.oauth_grants(id) ON DELETE CASCADE;


--
-- Name: oauth_authorization_codes fk_oauth_authorization_codes_user_id_users; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.oauth_authorization_codes
    ADD CONSTRAINT fk_oauth_authorization_codes_user_id_users FOREIGN KEY (user_id) REFERENCES public.users(id) ON DELETE CASCADE;


--
-- Name: oauth_consents fk_oauth_consents_client_id_oauth_clients; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.oauth_consents
    ADD CONSTRAINT fk_oauth_consents_client_id_oauth_clients FOREIGN KEY (client_id) REFERENCES public.oauth_clients(client_id) ON DELETE CASCADE;


--
-- Name: oauth_consents fk_oauth_consents_user_id_users; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.oauth_consents
    ADD CONSTRAINT fk_oauth_consents_user_id_users FOREIGN KEY (user_id) REFERENCES public.users(id) ON DELETE CASCADE;


--
-- Name: oauth_grants fk_oauth_grants_client_id_oauth_clients; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.oauth_grants
    ADD CONSTRAINT fk_oauth_grants_client_id_oauth_clients FOREIGN KEY (client_id) REFERENCES public.oauth_clients(client_id) ON DELETE CASCADE;


--
-- Name: oauth_grants fk_oauth_grants_sso_session_id_sso_sessions; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.oauth_grants
    ADD CONSTRAINT fk_oauth_grants_sso_session_id_sso_sessions FOREIGN KEY (sso_session_id) REFERENCES public.sso_sessions(id) ON DELETE SET NULL;


--
-- Name: oauth_grants fk_oauth_grants_user_id_users; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.oauth_grants
    ADD CONSTRAINT fk_oauth_grants_user_id_users FOREIGN KEY (user_id) REFERENCES public.users(id) ON DELETE CASCADE;


--
-- Name: oauth_tokens fk_oauth_tokens_client_id_oauth_clients; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.oauth_tokens
    ADD CONSTRAINT fk_oauth_tokens_client_id_oauth_clients FOREIGN KEY (client_id) REFERENCES public.oauth_clients(client_id) ON DELETE CASCADE;


--
-- Name: oauth_tokens fk_oauth_tokens_grant_id_oauth_grants; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.oauth_tokens
    ADD CONSTRAINT fk_oauth_tokens_grant_id_oauth_grants FOREIGN KEY (grant_id) REFERENCES public.oauth_grants(id) ON DELETE CASCADE;


--
-- Name: oauth_tokens fk_oauth_tokens_user_id_users; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.oauth_tokens
    ADD CONSTRAINT fk_oauth_tokens_user_id_users FOREIGN KEY (user_id) REFERENCES public.users(id) ON DELETE CASCADE;


--
-- Name: sso_sessions fk_sso_sessions_user_id_users; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.sso_sessions
    ADD CONSTRAINT fk_sso_sessions_user_id_users FOREIGN KEY (user_id) REFERENCES public.users(id) ON DELETE CASCADE;


--
-- PostgreSQL database dump complete
--
