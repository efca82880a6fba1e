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
