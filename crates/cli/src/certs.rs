//! `gotalk serve`'s TLS certificate: read from its files at start, read again on SIGHUP and
//! when the files change, so a renewed certificate is served without a restart.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use gotalk::tls::ReloadableCert;

/// The server configuration for the certificate at `cert` and the key at `key`, reloaded on
/// SIGHUP, and every `poll` when the files changed (`None`: on SIGHUP only). With `clients`
/// (the CA PEM, and whether a certificate is required), clients are asked for theirs.
pub(crate) fn server_config(
    cert: &Path,
    key: &Path,
    poll: Option<Duration>,
    clients: Option<(Vec<u8>, bool)>,
) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let reloadable = ReloadableCert::load(cert, key)
        .with_context(|| format!("--tls-cert {} --tls-key {}", cert.display(), key.display()))?;
    let config = match clients {
        Some((ca, required)) => {
            reloadable.server_config_verifying_clients(&ca, required).context("--client-ca")?
        }
        None => reloadable.server_config()?,
    };
    if let Some(every) = poll {
        reloadable.watch(every);
    }
    on_hangup(&reloadable)?;
    Ok(config)
}

/// Reloads the certificate at each SIGHUP, the signal operators and certbot's deploy hooks
/// send for it. Installing the handler also keeps SIGHUP from ending the process.
#[cfg(unix)]
fn on_hangup(cert: &Arc<ReloadableCert>) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangups = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;
    let cert = Arc::downgrade(cert);
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            let Some(cert) = cert.upgrade() else { return };
            let outcome = cert.reload().map(|()| true);
            cert.log_reload(outcome, "SIGHUP");
        }
    });
    Ok(())
}

#[cfg(not(unix))]
fn on_hangup(_cert: &Arc<ReloadableCert>) -> anyhow::Result<()> {
    Ok(())
}
