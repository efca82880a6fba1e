//! The relay bus conformance suite (`gotalk_tests::conformance`) against every bus: the
//! one-process bus shared by all instances, and the cluster bus over a real `redis-server`
//! started on a free port. Cases that disturb the bus server run only where there is one.
//! With `GOTALK_CLUSTER_TESTS=skip` the cases that need a bus server say so and pass.

use std::time::Duration;

use gotalk_cluster::redis::RedisLink;
use gotalk_cluster::{ClusterBus, ClusterSettings, StartError};
use gotalk_tests::conformance::{self, Backend};
use gotalk_tests::servers::{self, Auth, Redis};

/// A cluster backend over `redis`'s URL.
fn redis_backend(redis: &Redis) -> Backend {
    let url = redis.url();
    Backend::cluster("redis", move |settings: ClusterSettings| {
        let url = url.clone();
        async move {
            let link = RedisLink::new(&url).expect("a redis url");
            ClusterBus::start(link, settings).await.expect("the cluster bus starts")
        }
    })
}

macro_rules! on_every_bus {
    ($($case:ident),* $(,)?) => {
        mod local {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    gotalk_tests::conformance::$case(&gotalk_tests::conformance::Backend::local())
                        .await;
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    if gotalk_tests::servers::skip_cluster_tests() {
                        return;
                    }
                    let redis = gotalk_tests::servers::Redis::start().await;
                    gotalk_tests::conformance::$case(&super::redis_backend(&redis)).await;
                }
            )*
        }
    };
}

on_every_bus!(
    relay_across_instances,
    unknown_peer_is_fast,
    remote_full_queue,
    order_is_kept,
    id_is_told_once_reachable,
    groups_across_instances,
    a_closed_connection_leaves_everywhere,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_a_departed_instance_is_forgotten() {
    if servers::skip_cluster_tests() {
        return;
    }
    let redis = Redis::start().await;
    conformance::a_departed_instance_is_forgotten(&redis_backend(&redis)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_of_2_s() {
    if servers::skip_cluster_tests() {
        return;
    }
    let mut redis = Redis::start().await;
    let backend = redis_backend(&redis);
    conformance::bus_outage(&backend, &mut redis, Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_of_10_s() {
    if servers::skip_cluster_tests() {
        return;
    }
    let mut redis = Redis::start().await;
    let backend = redis_backend(&redis);
    conformance::bus_outage(&backend, &mut redis, Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_in_flight_edge() {
    if servers::skip_cluster_tests() {
        return;
    }
    let mut redis = Redis::start().await;
    let backend = redis_backend(&redis);
    conformance::in_flight_edge(&backend, &mut redis).await;
}

/// A Redis user limited to the prefix's keys and channels is all an instance needs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_acl_user_limited_to_the_prefix_works() {
    if servers::skip_cluster_tests() {
        return;
    }
    let redis = Redis::start_with(Auth::new("gotalk")).await;
    let backend = redis_backend(&redis);
    conformance::relay_across_instances(&backend).await;
    conformance::a_closed_connection_leaves_everywhere(&backend).await;
}

/// A wrong password: the bus does not start, and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_wrong_password_fails_start_clearly() {
    if servers::skip_cluster_tests() {
        return;
    }
    let redis = Redis::start_with(Auth::new("gotalk")).await;
    let url = format!("redis://gotalk:wrong@127.0.0.1:{}", redis.port());
    let link = RedisLink::new(&url).unwrap();
    let err = ClusterBus::start(link, ClusterSettings::default()).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, StartError::Connect { kind: "redis", .. }), "{err:?}");
    assert!(text.contains("WRONGPASS") || text.contains("invalid"), "{text}");
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
