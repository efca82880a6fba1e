//! The relay bus conformance suite (`gotalk_tests::conformance`) against every bus: the
//! one-process bus shared by all instances, and the cluster bus over a real `redis-server` and
//! a real `nats-server`, each started on a free port. Cases that disturb the bus server run
//! only where there is one. With `GOTALK_CLUSTER_TESTS=skip` the cases that need a bus server
//! say so and pass.

use std::time::Duration;

use gotalk_cluster::nats::NatsLink;
use gotalk_cluster::redis::RedisLink;
use gotalk_cluster::{ClusterBus, ClusterSettings, Link, StartError};
use gotalk_tests::conformance::Backend;

/// A cluster backend whose instances reach the bus with the link `connect` makes of `url`.
fn backend<L: Link>(name: &'static str, url: String, connect: fn(&str) -> L) -> Backend {
    Backend::cluster(name, move |settings: ClusterSettings| {
        let link = connect(&url);
        async move { ClusterBus::start(link, settings).await.expect("the cluster bus starts") }
    })
}

fn redis_link(url: &str) -> RedisLink {
    RedisLink::new(url).expect("a redis url")
}

fn nats_link(url: &str) -> NatsLink {
    NatsLink::new(url).expect("a nats url")
}

/// How long the cases that pause the bus server keep it paused, at most, on a busy machine:
/// their links wait this long for the server's answers. With the default command timeout
/// (1 s for Redis) a link gives up on its session while the server is stopped, and the
/// relays meant to wait end as "relay unavailable" instead.
const PAUSED_FOR: Duration = Duration::from_secs(10);

fn patient_redis_link(url: &str) -> RedisLink {
    redis_link(url).command_timeout(PAUSED_FOR)
}

fn patient_nats_link(url: &str) -> NatsLink {
    nats_link(url).call_timeout(PAUSED_FOR)
}

mod local {
    use gotalk_tests::conformance::{self, Backend};

    macro_rules! cases {
        ($($case:ident),* $(,)?) => {$(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                conformance::$case(&Backend::local()).await;
            }
        )*};
    }
    cases!(
        relay_across_instances,
        unknown_peer_is_fast,
        remote_full_queue,
        order_is_kept,
        id_is_told_once_reachable,
        groups_across_instances,
        history_right_after_start,
        a_closed_connection_leaves_everywhere,
        resume_across_instances,
        resume_with_a_wrong_secret_is_refused,
    );
}

/// Cases that need only a fresh bus server of type `$server`, and `backend` in scope.
macro_rules! bus_cases {
    ($server:ty; $($case:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $case() {
            if gotalk_tests::servers::skip_cluster_tests() {
                return;
            }
            let server = <$server>::start().await;
            gotalk_tests::conformance::$case(&backend(&server)).await;
        }
    )*};
}

/// Cases that disturb the bus server, which they take besides the backend.
macro_rules! server_cases {
    ($server:ty; $($case:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $case() {
            if gotalk_tests::servers::skip_cluster_tests() {
                return;
            }
            let mut server = <$server>::start().await;
            let backend = paused_backend(&server);
            gotalk_tests::conformance::$case(&backend, &mut server).await;
        }
    )*};
}

/// Every case against one bus: `$server` is the harness's guard for its server, `$link`
/// makes a link of a URL, `$patient` one for the cases that pause the server, `$limited` starts the server with a user limited to the prefix.
macro_rules! on_a_bus {
    ($bus:ident, $server:ty, $link:path, $patient:path, $limited:expr, $wrong_password:expr) => {
        mod $bus {
            use std::time::Duration;

            use gotalk_cluster::{ClusterBus, ClusterSettings, StartError};
            use gotalk_tests::conformance;
            use gotalk_tests::servers::{skip_cluster_tests, Auth};

            type Server = $server;

            fn backend(server: &Server) -> gotalk_tests::conformance::Backend {
                super::backend(stringify!($bus), server.url(), $link)
            }

            /// For the cases that pause the server: links that outwait the pause.
            fn paused_backend(server: &Server) -> gotalk_tests::conformance::Backend {
                super::backend(stringify!($bus), server.url(), $patient)
            }

            bus_cases!(
                Server;
                relay_across_instances,
                unknown_peer_is_fast,
                remote_full_queue,
                order_is_kept,
                id_is_told_once_reachable,
                groups_across_instances,
                history_right_after_start,
                a_closed_connection_leaves_everywhere,
                a_departed_instance_is_forgotten,
                resume_across_instances,
                resume_with_a_wrong_secret_is_refused,
            );

            server_cases!(Server; in_flight_edge, in_flight_bytes_edge);

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn outage_of_2_s() {
                if skip_cluster_tests() {
                    return;
                }
                let mut server = Server::start().await;
                let backend = backend(&server);
                conformance::bus_outage(&backend, &mut server, Duration::from_secs(2)).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn outage_of_10_s() {
                if skip_cluster_tests() {
                    return;
                }
                let mut server = Server::start().await;
                let backend = backend(&server);
                conformance::bus_outage(&backend, &mut server, Duration::from_secs(10)).await;
            }

            /// A user limited to the prefix's channels (and keys) is all an instance needs.
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_user_limited_to_the_prefix_works() {
                if skip_cluster_tests() {
                    return;
                }
                let limited: fn(Auth) -> _ = $limited;
                let server = limited(Auth::new("gotalk")).await;
                let backend = backend(&server);
                conformance::relay_across_instances(&backend).await;
                conformance::a_closed_connection_leaves_everywhere(&backend).await;
            }

            /// A wrong password: the bus does not start, and says why.
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_wrong_password_fails_start_clearly() {
                if skip_cluster_tests() {
                    return;
                }
                let limited: fn(Auth) -> _ = $limited;
                let server = limited(Auth::new("gotalk")).await;
                let scheme = stringify!($bus);
                let url = format!("{scheme}://gotalk:wrong@127.0.0.1:{}", server.port());
                let err = ClusterBus::start($link(&url), ClusterSettings::default()).await;
                let err = err.err().expect("a wrong password is refused");
                assert!(matches!(err, StartError::Connect { .. }), "{err:?}");
                let text = err.to_string().to_lowercase();
                let says: &[&str] = $wrong_password;
                assert!(says.iter().any(|s| text.contains(s)), "{text}");
            }
        }
    };
}

on_a_bus!(
    redis,
    gotalk_tests::servers::Redis,
    super::redis_link,
    super::patient_redis_link,
    |auth| Box::pin(gotalk_tests::servers::Redis::start_with(auth)),
    &["wrongpass", "invalid"]
);
on_a_bus!(
    nats,
    gotalk_tests::servers::Nats,
    super::nats_link,
    super::patient_nats_link,
    |auth| Box::pin(gotalk_tests::servers::Nats::start_with(auth, "gotalk")),
    &["authorization"]
);

/// The cluster bus over a three-node Redis Cluster (sharded pub/sub): the cases that reach
/// across instances, and an outage of every node.
mod redis_cluster {
    use std::time::Duration;

    use gotalk_tests::conformance;
    use gotalk_tests::servers::{skip_cluster_tests, RedisCluster};

    type Server = RedisCluster;

    fn backend(server: &Server) -> gotalk_tests::conformance::Backend {
        super::backend("redis_cluster", server.url(), super::redis_link)
    }

    bus_cases!(
        Server;
        relay_across_instances,
        unknown_peer_is_fast,
        order_is_kept,
        groups_across_instances,
        a_closed_connection_leaves_everywhere,
    );

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn outage_of_2_s() {
        if skip_cluster_tests() {
            return;
        }
        let mut server = Server::start().await;
        let backend = backend(&server);
        conformance::bus_outage(&backend, &mut server, Duration::from_secs(2)).await;
    }
}

/// Channel names come from the prefix, fixed words, server-made ids and checked group
/// names only: a prefix that is not a safe token is refused, as is a group name with a
/// separator or wildcard.
#[tokio::test]
async fn unsafe_prefixes_and_group_names_never_become_channel_names() {
    let redis_url = "redis://127.0.0.1:1";
    for bad in ["a:b", "a.b", "a*", "", "a b", "a>"] {
        let link = RedisLink::new(redis_url).unwrap();
        let err = ClusterBus::start(link, ClusterSettings::default().prefix(bad)).await;
        assert!(matches!(err, Err(StartError::BadPrefix(_))), "{bad:?}: {err:?}");
    }
    for bad in ["gotalk:all", "a.b", "*", ">", "a b"] {
        assert!(gotalk::relay::Group::new(bad).is_err(), "{bad:?}");
    }
}
