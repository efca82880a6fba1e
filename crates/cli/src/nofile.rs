//! The open-file limit. Every connection is a file descriptor, and many systems still start
//! processes with a soft limit of 1,024, far below the connection limits, so `serve` and
//! `bench` raise it to the hard limit themselves rather than ask every user for `ulimit -n`.

/// Raises the soft limit on open files as far as the hard limit allows, and returns the
/// limit in force. A failure is reported and the current limit returned.
pub fn raise_open_file_limit() -> u64 {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(e) => {
            tracing::warn!(error = %e, "cannot raise the open-file limit");
            rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(0, |(soft, _)| soft)
        }
    }
}
