//! The cluster's links against real buses: the conformance cases of
//! `gotalk_tests::link_conformance` once per bus (one `link_conformance!` line in a module
//! named after the bus), and what only one bus has.

mod nats {
    use std::time::Duration;

    use bytes::Bytes;
    use gotalk_cluster::{Link, NatsLink};
    use gotalk_tests::servers::{skip_cluster_tests, Auth, Nats};
    use tokio::sync::mpsc;

    gotalk_tests::link_conformance!(Nats, |url: &str| NatsLink::new(url).unwrap());

    /// Credentials set on the link, for a URL that has none, log in as well as the URL's.
    #[tokio::test]
    async fn credentials_from_the_settings() {
        if skip_cluster_tests() {
            return;
        }
        let auth = Auth::new("gotalk");
        let server = Nats::start_with(auth.clone(), "gotalk").await;
        let bare = format!("nats://127.0.0.1:{}", server.port());
        let refused = NatsLink::new(&bare).unwrap().connect(mpsc::channel(1).0).await;
        assert!(refused.is_err(), "no credentials, yet connected");
        let link = NatsLink::new(&bare).unwrap().user_password(&auth.user, &auth.password);
        let (tx, mut rx) = mpsc::channel(8);
        let session = link.connect(tx).await.expect("connect with the settings' credentials");
        let x = link.channel(&["gotalk", "x"]);
        session.subscribe(std::slice::from_ref(&x)).await.unwrap();
        session.publish(&x, Bytes::from_static(b"hi")).await.unwrap();
        let m = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.unwrap().unwrap();
        assert_eq!(&m.payload[..], b"hi");
    }

    /// A prefix with a wildcard or an empty token is refused before anything is sent.
    #[tokio::test]
    async fn a_prefix_that_is_not_plain_tokens_is_refused() {
        let link = NatsLink::new("nats://127.0.0.1:1").unwrap().prefix("a.>");
        let error = link.connect(mpsc::channel(1).0).await.err().expect("refused");
        assert!(error.0.contains("prefix"), "{error}");
    }
}

mod redis {
    use std::future::Future;
    use std::pin::Pin;
    use std::task::Poll;

    use bytes::Bytes;
    use gotalk_cluster::{Link, LinkError, RedisLink};
    use gotalk_tests::servers::{skip_cluster_tests, Redis};
    use tokio::sync::mpsc;

    gotalk_tests::link_conformance!(Redis, |url: &str| RedisLink::new(url).unwrap());

    type Call<'a> = Pin<Box<dyn Future<Output = Result<(), LinkError>> + Send + 'a>>;

    /// Polls `call` once, without yielding to the runtime: on this one-thread runtime the
    /// session's writer cannot run meanwhile, so every call polled this way waits in its
    /// queue.
    async fn poll_once(call: &mut Call<'_>) -> Poll<Result<(), LinkError>> {
        std::future::poll_fn(|cx| Poll::Ready(call.as_mut().poll(cx))).await
    }

    /// `max_pending` publishes handed over at once all go out; one more fails at once, and
    /// fails the session (the connection is not keeping up) rather than wait.
    #[tokio::test]
    async fn write_queue_at_and_past_max_pending() {
        if skip_cluster_tests() {
            return;
        }
        const LIMIT: usize = 8;
        let server = Redis::start().await;
        let link = RedisLink::new(&server.url()).unwrap().max_pending(LIMIT);
        let x = link.channel(&["gotalk", "test", "queue"]);
        let (tx, _rx) = mpsc::channel(16);

        let at = link.connect(tx.clone()).await.unwrap();
        let mut calls: Vec<Call<'_>> =
            (0..LIMIT).map(|i| at.publish(&x, Bytes::from(i.to_string()))).collect();
        for call in &mut calls {
            assert!(poll_once(call).await.is_pending(), "nothing written before the writer runs");
        }
        for call in calls {
            call.await.expect("a call within the limit");
        }
        at.publish(&x, Bytes::new()).await.expect("the session still works");

        let past = link.connect(tx).await.unwrap();
        let mut calls: Vec<Call<'_>> =
            (0..=LIMIT).map(|i| past.publish(&x, Bytes::from(i.to_string()))).collect();
        for call in &mut calls[..LIMIT] {
            assert!(poll_once(call).await.is_pending());
        }
        let Poll::Ready(refused) = poll_once(&mut calls[LIMIT]).await else {
            panic!("the call past the limit waits");
        };
        assert!(refused.is_err(), "the call past the limit was taken");
        let after = past.publish(&x, Bytes::new()).await;
        assert!(after.is_err(), "the session carries on after its queue overflowed: {after:?}");
    }
}

mod redis_cluster {
    use gotalk_cluster::RedisLink;
    use gotalk_tests::servers::RedisCluster;

    gotalk_tests::link_conformance!(RedisCluster, |url: &str| RedisLink::new(url).unwrap());
}
