//! The two listeners: the public one (the webhook route and OAuth onboarding) and the admin one
//! (status, metrics, dashboard, management), each served with its limits until shutdown.

use super::*;

/// The two listeners' server tasks and the token that stops them accepting.
pub(super) struct Servers {
    pub(super) token: CancellationToken,
    pub(super) public: JoinHandle<()>,
    pub(super) admin: JoinHandle<()>,
    /// The dashboard's snapshot builder (it holds the store).
    pub(super) snapshots: Arc<crate::observe::dashboard::Snapshots>,
}

impl Servers {
    /// The public listener (webhook and OAuth routes) and the admin listener (status, metrics,
    /// dashboard, management); both time out slow headers and idle connections and cap their
    /// connections (see `server.rs`); the admin listener's SSE streams are responses, not idle.
    pub(super) fn spawn(
        config: &Config,
        accesslink: &AccessLinkConfig,
        public: TcpListener,
        admin: TcpListener,
        parts: Parts<'_>,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<Servers> {
        let admin_addr = admin.local_addr()?;
        let public_routes = public_routes(config, accesslink, &parts)?;
        let (admin_state, snapshots) = admin_state(config, admin_addr, &parts, shutdown);
        let management = admin_routes::routes(
            parts.store.clone(),
            parts.notifier.clone(),
            parts.client.clone(),
            accesslink.webhook_secret.is_some(),
            parts.watch_now.clone(),
        );
        let token = shutdown.child_token();
        let public_gauge = ListenerGauge::new("webhook", config.webhook.max_connections);
        let admin_gauge = ListenerGauge::new("admin", ADMIN_MAX_CONNECTIONS);
        if let Ok(mut rt) = parts.runtime.write() {
            rt.listeners = vec![public_gauge.clone(), admin_gauge.clone()];
        }
        let public = crate::tasks::spawn(
            "public listener",
            server::serve(
                public,
                public_routes,
                server::Limits {
                    header_timeout: config.webhook.body_timeout,
                    write_stall: server::WRITE_STALL,
                    grace: GRACE,
                    per_peer: None,
                    reserve: None,
                },
                public_gauge,
                token.clone().cancelled_owned(),
            ),
        );
        let admin = crate::tasks::spawn(
            "admin listener",
            server::serve(
                admin,
                admin::routes(admin_state, management),
                server::Limits {
                    header_timeout: Duration::from_secs(10),
                    write_stall: server::WRITE_STALL,
                    grace: GRACE,
                    per_peer: None,
                    // With every slot held (idle connections, streams), the probes still answer:
                    // before, 64 held connections kept /healthz from answering for 10 s.
                    reserve: Some(server::Reserve {
                        slots: ADMIN_PROBE_SLOTS,
                        paths: &["/livez", "/readyz", "/healthz"],
                    }),
                },
                admin_gauge,
                token.clone().cancelled_owned(),
            ),
        );
        Ok(Servers {
            token,
            public,
            admin,
            snapshots,
        })
    }
}

/// The public listener's routes: the webhook delivery route and the OAuth onboarding; anything
/// else is 404.
pub(super) fn public_routes(
    config: &Config,
    accesslink: &AccessLinkConfig,
    parts: &Parts<'_>,
) -> anyhow::Result<
    impl Filter<Extract = (warp::reply::Response,), Error = std::convert::Infallible>
    + Clone
    + Send
    + Sync
    + 'static,
> {
    let webhook_state = Arc::new(WebhookState {
        store: parts.store.clone(),
        path: config.webhook.path.clone(),
        max_body: config.webhook.max_body,
        body_timeout: config.webhook.body_timeout,
        secret: accesslink.webhook_secret.clone(),
        dialect: config.webhook.dialect,
        fetch: true,
        refusals: Default::default(),
    });
    let oauth = Arc::new(OAuth {
        store: parts.store.clone(),
        client: parts.client.clone(),
        client_id: accesslink.client_id.clone(),
        client_secret: accesslink.client_secret.clone(),
        authorize_url: accesslink.authorize_url.clone(),
        token_url: accesslink.token_url.clone(),
        redirect_uri: accesslink.redirect_uri.clone(),
        // The token endpoint answers directly; a redirect would carry the code elsewhere
        // (the factory follows none).
        http: crate::http::client(Duration::from_secs(15))?,
        pending: Default::default(),
    });
    Ok(webhook::route(webhook_state)
        .or(oauth::routes(oauth))
        .unify()
        .recover(|_r: warp::Rejection| async move {
            Ok::<_, std::convert::Infallible>(
                warp::reply::with_status("not found\n", warp::http::StatusCode::NOT_FOUND)
                    .into_response(),
            )
        })
        .unify())
}

/// What the admin routes read: the view, the dashboard's snapshots (also returned, for the
/// shutdown), liveness, the token and the hosts allowed without one.
pub(super) fn admin_state(
    config: &Config,
    admin_addr: SocketAddr,
    parts: &Parts<'_>,
    shutdown: &CancellationToken,
) -> (Arc<AdminState>, Arc<crate::observe::dashboard::Snapshots>) {
    let view = View {
        store: parts.store.clone(),
        queues: parts.queues.clone(),
        tally: parts.tally.clone(),
        runtime: parts.runtime.clone(),
        client: Some(parts.client.clone()),
    };
    let snapshots = Arc::new(crate::observe::dashboard::Snapshots::new(
        view.clone(),
        shutdown.child_token(),
    ));
    let admin_state = Arc::new(AdminState {
        snapshots: snapshots.clone(),
        view,
        liveness: parts.liveness.clone(),
        token: config.admin.token.clone(),
        // Without a token, the listener's own address is its protection (against DNS
        // rebinding and cross-origin changes); with one, the token is, and a proxy may name
        // another host.
        allowed_hosts: match config.admin.token {
            None => admin::loopback_hosts(admin_addr),
            Some(_) => None,
        },
        shutdown: shutdown.child_token(),
        sessions: Default::default(),
    });
    (admin_state, snapshots)
}
