//! Sessions kept for peers that went away: a peer that reconnects within the grace period
//! (see [`Relay::resume_grace`](super::Relay::resume_grace)) and shows its session's token
//! takes back its id, its groups and the messages sent to it meanwhile.
//!
//! While a connection is open its session is *live* here; when it closes for a reason the
//! peer may come back from (its network failed, it stopped answering) the session is *held*:
//! its id stays registered on the bus, so deliveries and group messages keep going into its
//! mailbox, within the mailbox's byte limit, until the session is taken over or expires.
//! A bus keeps the table ([`Bus::sessions`](super::Bus::sessions)), so a bus between
//! instances can hand a session held here to the instance the peer reconnected to.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Mutex;

use bytes::Bytes;
use gotalk_protocol::relay::PeerId;
use gotalk_protocol::session::{self, Secret, Token};
use tracing::Instrument;

use super::server::{announce, Attached, Conn};
use super::{Mailbox, Relay};
use crate::error::CloseReason;
use crate::extension::{Answer, Later};
use crate::lock;
use crate::memory::ConnBudget;
use crate::sock::Sock;

/// The sessions of one process's relay connections, live and held. Cheap to share behind
/// the bus that owns it.
#[derive(Debug, Default)]
pub struct Sessions {
    table: Mutex<Table>,
}

#[derive(Debug, Default)]
struct Table {
    entries: HashMap<PeerId, Entry>,
    held: usize,
    /// Tells one holding of an id from a later one, so an expiry that lost the race to a
    /// resume cannot end the session held again after it.
    seq: u64,
}

#[derive(Debug)]
enum Entry {
    Live { secret: Secret, sock: Sock },
    Held { secret: Secret, mailbox: Mailbox, seq: u64 },
}

impl Entry {
    fn secret(&self) -> &Secret {
        match self {
            Entry::Live { secret, .. } | Entry::Held { secret, .. } => secret,
        }
    }
}

impl CloseReason {
    /// The reason a connection is closed with when its session was resumed by another one
    /// (the peer reconnected before this side noticed the old connection had failed):
    /// `relay session resumed by another connection`.
    #[allow(non_snake_case)]
    pub fn Resumed() -> CloseReason {
        CloseReason::Extension { name: "relay", detail: RESUMED.to_owned(), timeout: false }
    }

    /// True for the reasons a peer may come back from: the connection failed or stopped
    /// answering, or the peer reconnected already. A close this side chose, a protocol
    /// violation, or a relay recipient that fell behind ends the session.
    pub(crate) fn keeps_session(&self) -> bool {
        match self {
            CloseReason::PeerClosed
            | CloseReason::PeerClosedMidMessage
            | CloseReason::Io(_)
            | CloseReason::ReadTimeout(_)
            | CloseReason::FrameTimeout(_)
            | CloseReason::WriteTimeout(_)
            | CloseReason::PeerDead(_)
            | CloseReason::AnswerTimeout(_) => true,
            CloseReason::Extension { name: "relay", detail, .. } => detail == RESUMED,
            _ => false,
        }
    }
}

const RESUMED: &str = "relay session resumed by another connection";

impl Sessions {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many sessions are held for peers that went away.
    pub fn held(&self) -> usize {
        lock(&self.table).held
    }

    /// Takes over the session `id` if `secret` is its own: a held session's mailbox, still
    /// registered under `id` on the bus, is handed out and the session leaves the table; a
    /// live one's connection is closed first with [`CloseReason::Resumed`], which holds it.
    /// `None` for an unknown id or a wrong secret (nothing tells the two apart).
    pub fn take(&self, id: PeerId, secret: &Secret) -> Option<Mailbox> {
        for _ in 0..2 {
            let live = {
                let mut table = lock(&self.table);
                let entry = table.entries.get(&id)?;
                if !entry.secret().matches(secret) {
                    return None;
                }
                match entry {
                    Entry::Live { sock, .. } => sock.clone(),
                    Entry::Held { mailbox, .. } => {
                        if mailbox.is_overflowed() {
                            // Lost a group message: ending it is already under way.
                            return None;
                        }
                        let Some(Entry::Held { mailbox, .. }) = table.entries.remove(&id) else {
                            return None;
                        };
                        table.held -= 1;
                        return Some(mailbox);
                    }
                }
            };
            // Its detach runs inside the close and holds the session, unless the table is
            // full or the connection was closing already for another reason.
            live.close_with(CloseReason::Resumed(), None);
        }
        None
    }

    /// Records the live session of `sock`.
    pub(crate) fn live(&self, id: PeerId, secret: Secret, sock: Sock) {
        lock(&self.table).entries.insert(id, Entry::Live { secret, sock });
    }

    /// Forgets the live session `id` if it is `sock`'s.
    pub(crate) fn forget_live(&self, id: PeerId, sock: &Sock) {
        let mut table = lock(&self.table);
        if matches!(table.entries.get(&id), Some(Entry::Live { sock: s, .. }) if s.same(sock)) {
            table.entries.remove(&id);
        }
    }

    /// Holds the session `id` of a connection that closed, unless `max` are held already;
    /// the number to expire it with.
    pub(crate) fn hold(
        &self,
        id: PeerId,
        secret: Secret,
        mailbox: Mailbox,
        max: usize,
    ) -> Option<u64> {
        let mut table = lock(&self.table);
        if table.held >= max {
            return None;
        }
        table.seq += 1;
        let seq = table.seq;
        let replaced = table.entries.insert(id, Entry::Held { secret, mailbox, seq });
        if !matches!(replaced, Some(Entry::Held { .. })) {
            table.held += 1;
        }
        Some(seq)
    }

    /// Ends the held session `id` if it is still the holding `seq`: true when the caller is
    /// to free the id.
    pub(crate) fn expire(&self, id: PeerId, seq: u64) -> bool {
        let mut table = lock(&self.table);
        if matches!(table.entries.get(&id), Some(Entry::Held { seq: s, .. }) if *s == seq) {
            table.entries.remove(&id);
            table.held -= 1;
            return true;
        }
        false
    }
}

impl Relay {
    /// Answers `$resume`: takes over the session of the token in `payload`, kept here or,
    /// through the bus, on another instance.
    pub(super) fn resume(&self, sock: &Sock, payload: &[u8]) -> Answer {
        let refused = || Answer::Error(session::REFUSED.to_owned());
        let (Some(conn), Some(token)) = (sock.state::<Conn>(), Token::parse_json(payload)) else {
            return refused();
        };
        let Some(sessions) = self.bus.sessions().filter(|_| !self.resume_grace.is_zero()) else {
            return refused();
        };
        {
            let now = lock(&conn.now);
            if now.id == token.id {
                // Its own session: nothing to take over.
                return match now.secret {
                    Some(secret) if secret.matches(&token.secret) => resumed(token.id),
                    _ => refused(),
                };
            }
        }
        if conn.resuming.swap(true, Ordering::AcqRel) {
            return refused();
        }
        if let Some(mailbox) = sessions.take(token.id, &token.secret) {
            let answer = self.adopt(sock, conn, token, mailbox);
            conn.resuming.store(false, Ordering::Release);
            return answer;
        }
        // Another instance may hold it. The handover runs in a task of its own, so a
        // session the bus hands over is adopted (or held again) even if this connection
        // closes and drops the answer.
        let mailbox = Mailbox::charged(self.queue_bytes, Some(sock.conn_budget().clone()));
        let resuming = self.bus.resume(token.id, token.secret, mailbox.clone());
        let (relay, sock) = (self.clone(), sock.clone());
        let handover = async move {
            let answer = if resuming.await {
                match sock.state::<Conn>() {
                    Some(conn) => relay.adopt(&sock, conn, token, mailbox),
                    None => refused(),
                }
            } else {
                mailbox.close();
                refused()
            };
            if let Some(conn) = sock.state::<Conn>() {
                conn.resuming.store(false, Ordering::Release);
            }
            answer
        };
        let handover = tokio::spawn(handover.instrument(tracing::Span::current()));
        Answer::Later(Later::new(async move { handover.await.unwrap_or_else(|_| refused()) }))
    }

    /// Makes the session `token` (its mailbox registered under its id on the bus) the
    /// connection's, in place of the one it was given, which is freed.
    fn adopt(&self, sock: &Sock, conn: &Conn, token: Token, mailbox: Mailbox) -> Answer {
        mailbox.rebudget(Some(sock.conn_budget().clone()));
        let fresh = {
            let mut now = lock(&conn.now);
            let adopted = Attached {
                id: token.id,
                secret: Some(token.secret),
                mailbox: mailbox.clone(),
                detached: now.detached,
            };
            let fresh = std::mem::replace(&mut *now, adopted);
            if fresh.detached {
                // Closed while the bus handed it over: the session is held again.
                let reason = sock.close_reason().unwrap_or(CloseReason::Local);
                self.release(sock, &now, &reason);
                return Answer::Error(session::REFUSED.to_owned());
            }
            if let Some(sessions) = self.bus.sessions() {
                sessions.live(token.id, token.secret, sock.clone());
                sessions.forget_live(fresh.id, sock);
            }
            fresh
        };
        self.bus.unregister(fresh.id);
        fresh.mailbox.close();
        // The session's groups are the connection's now, and count against its limit: a
        // peer cannot pile up groups by resuming.
        *lock(&conn.groups) = self.bus.joined(token.id);
        tracing::debug!(parent: sock.span(), id = %token.id, "relay session resumed");
        self.drain_on_first(sock, &mailbox);
        // Told again, so a client's inbox follows the id it now has.
        conn.announced.store(false, Ordering::Release);
        if conn.reachable.load(Ordering::Acquire) && sock.peer_understands_reserved() {
            announce(sock, conn);
        }
        resumed(token.id)
    }

    /// Holds the session `now` of the connection `sock`, closed for `reason`, when the peer
    /// may come back for it; else frees its id and drops what its mailbox holds.
    pub(super) fn release(&self, sock: &Sock, now: &Attached, reason: &CloseReason) {
        if let (Some(secret), Some(sessions)) = (now.secret, self.bus.sessions()) {
            sessions.forget_live(now.id, sock);
            let runtime = tokio::runtime::Handle::try_current();
            if reason.keeps_session() && !sock.peer_done() && runtime.is_ok() {
                // The connection has gone; its drain must not be started, nor the
                // connection held, by what arrives for the session meanwhile.
                now.mailbox.forget_start();
                // What it holds from now on is charged to the process's budget alone: the
                // connection's is gone with it.
                let process = sock.config().budget().clone();
                now.mailbox.rebudget(Some(ConnBudget::new(usize::MAX, process)));
                if let Some(seq) =
                    sessions.hold(now.id, secret, now.mailbox.clone(), self.max_detached)
                {
                    tracing::debug!(parent: sock.span(), id = %now.id, "relay session held");
                    self.expire_later(now.id, seq, now.mailbox.clone());
                    return;
                }
            }
        }
        self.bus.unregister(now.id);
        now.mailbox.close();
    }

    /// Frees the held session `id` after the grace period, or at once should a group message
    /// not fit in its mailbox, unless it is resumed first.
    fn expire_later(&self, id: PeerId, seq: u64, mailbox: Mailbox) {
        let bus = self.bus.clone();
        let grace = self.resume_grace;
        tokio::spawn(async move {
            tokio::select! {
                () = tokio::time::sleep(grace) => {}
                () = mailbox.overflowed() => {}
            }
            if bus.sessions().is_some_and(|sessions| sessions.expire(id, seq)) {
                tracing::debug!(%id, "relay session expired");
                bus.unregister(id);
                mailbox.close();
            }
        });
    }
}

fn resumed(id: PeerId) -> Answer {
    Answer::Result(Bytes::from(format!("\"{id}\"")))
}

impl Sock {
    /// Takes back the relay session of `token` (from [`Inbox::session`](super::Inbox::session)
    /// on an earlier connection to a server that keeps sessions): this connection gets the
    /// session's id and groups in place of its own, and what was sent to the session while
    /// it was away arrives next, in its order. Send it first on a new connection, before
    /// anything that depends on the id.
    ///
    /// # Errors
    /// [`Error::Remote`](crate::Error::Remote) `resume refused` for a session that expired, was never kept, or is
    /// not the token's (the connection keeps the id it was given); [`Error::Closed`](crate::Error::Closed).
    ///
    /// ```no_run
    /// # async fn demo(addr: std::net::SocketAddr) -> Result<(), gotalk::Error> {
    /// use std::sync::Arc;
    /// use gotalk::relay::Inbox;
    ///
    /// let inbox = Inbox::new();
    /// let mut handlers = gotalk::Handlers::new();
    /// inbox.install(&mut handlers);
    /// let handlers = Arc::new(handlers);
    /// let sock = gotalk::tcp::connect(addr, handlers.clone(), Default::default()).await?;
    /// let me = inbox.id().await;
    /// # let _ = sock;
    /// // ... the connection fails ...
    /// let token = inbox.session().expect("the server keeps sessions");
    /// let sock = gotalk::tcp::connect(addr, handlers, Default::default()).await?;
    /// assert_eq!(sock.resume(&token).await?, me);
    /// # Ok(()) }
    /// ```
    pub async fn resume(&self, token: &Token) -> Result<PeerId, crate::Error> {
        self.request(session::RESUME, &token.to_string()).await
    }
}
