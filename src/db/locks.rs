//! One writer per tus upload, across every process on the database: [`UploadLocks`].
//!
//! A PATCH holds its upload's [`Lease`] for as long as it holds the upload's file, inside the
//! hand-over's [`Hold`] (so the lease ends exactly when the local lock does, after the
//! offset is recorded). Where the lease lives:
//!
//! - **PostgreSQL**: a session advisory lock (`pg_try_advisory_lock`) on one connection of
//!   this process's own (never a pooled one: a pooled connection given back keeps its locks),
//!   keyed by [`key_of`] the upload id. The same connection `LISTEN`s on [`CHANNEL`]: a
//!   request that finds the upload held by another replica `NOTIFY`s it (payload: the upload
//!   id), the replica holding it asks its PATCH to stop (the hand-over's stop path: bytes
//!   kept, offset recorded), and the asker waits for the lock. A replica that dies loses its
//!   locks when its session ends: at once when the process dies (its socket closes), within
//!   about 11 s when its host vanishes (TCP keepalive, set on both ends of the session).
//!   When the connection is lost, every PATCH of this process is stopped at once (its lock is
//!   gone) and new ones get 503 `database_unavailable` until it is back.
//! - **SQLite** (one node): nothing beyond the process; the file's `flock` decides, and the
//!   hand-over is the in-process one.
//!
//! Advisory locks are re-entrant per session, and every PATCH of this process shares the one
//! session: the leases this process holds are also kept in a map, so that a second PATCH of
//! the same process is told the upload is held (and asks for it locally) rather than
//! stacking a second lock.

use std::collections::HashMap;
use std::future::poll_fn;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::{mpsc, watch, Notify};
use tokio_postgres::{AsyncMessage, Notification, Statement};

use super::postgres::PgTarget;
use crate::config::{Config, DatabaseUrl};
use crate::error::{error_chain, AppError};
use crate::ids::UploadId;
use crate::upload::handover::{Hold, Holders, HANDOVER_WAIT};

/// The channel replicas ask each other for an upload on; the payload is the upload's id.
pub const CHANNEL: &str = "troupe_upload_release";

/// The lock connection's `application_name` (with the process id after it), as
/// `pg_stat_activity` shows it.
pub const APPLICATION_NAME: &str = "troupe upload locks";

/// Between two tries at a lock another replica was asked to let go of: the first pause, and
/// the longest.
const FIRST_PAUSE: Duration = Duration::from_millis(10);
const LONGEST_PAUSE: Duration = Duration::from_millis(100);

/// Between two attempts to connect again after the lock connection was lost (the first
/// attempt goes at once): the first pause, and the longest.
const RECONNECT_FIRST: Duration = Duration::from_millis(100);
const RECONNECT_LONGEST: Duration = Duration::from_secs(2);

/// Settings of the lock session, each set only where the server has it (older servers lack
/// some): the server's keepalive ends the session, and frees its locks, about 11 s after
/// this process's host stops answering (5 s idle, then 3 probes 2 s apart; an unacknowledged
/// write gives up after 11 s); no idle timeout may end a session that only waits.
const SESSION_SETTINGS: &str = "SELECT set_config(name, value, false) FROM (VALUES \
     ('tcp_keepalives_idle', '5'), ('tcp_keepalives_interval', '2'), \
     ('tcp_keepalives_count', '3'), ('tcp_user_timeout', '11000'), \
     ('idle_session_timeout', '0'), ('idle_in_transaction_session_timeout', '0')) \
     AS wanted(name, value) WHERE name IN (SELECT name FROM pg_settings)";

/// The advisory lock key of upload `id`: FNV-1a (64-bit) over all 16 bytes of the UUID. Not
/// the first 8 bytes alone: UUIDv7 ids begin with their millisecond timestamp, so uploads
/// created in the same moment would share them. The function is fixed here, not a
/// library's hasher, so that every replica and every version computes the same key.
pub fn key_of(id: UploadId) -> i64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let hash = id.0.as_bytes().iter().fold(OFFSET, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(PRIME)
    });
    i64::from_ne_bytes(hash.to_ne_bytes())
}

/// The locks of tus uploads: this process's holders (the hand-over) and, on PostgreSQL,
/// the locks shared with every other replica. Cheap to clone.
#[derive(Clone, Default)]
pub struct UploadLocks {
    holders: Arc<Holders>,
    pg: Option<Arc<PgLocks>>,
}

/// One upload's lock, taken by [`UploadLocks::take`]; released when dropped.
#[derive(Debug, Default)]
pub struct Lease(Option<Leased>);

#[derive(Debug)]
struct Leased {
    locks: Arc<PgLocks>,
    id: UploadId,
    /// The session the advisory lock was taken on.
    session: u64,
}

impl Lease {
    /// A lease of this process alone (SQLite; tests).
    pub fn local() -> Self {
        Self(None)
    }
}

impl Drop for Leased {
    fn drop(&mut self) {
        self.locks.release(self.id, self.session);
    }
}

impl UploadLocks {
    /// The locks for `config`'s database. On PostgreSQL nothing connects until
    /// [`UploadLocks::keep_session`] runs.
    pub fn new(config: &Config) -> Self {
        let holders = Arc::new(Holders::default());
        let pg = match &config.database {
            // `migrate` has already refused a URL this fails on.
            DatabaseUrl::Postgres(url) => PgTarget::parse(url).ok().map(|target| {
                let name = format!("{APPLICATION_NAME} {}", std::process::id());
                Arc::new(PgLocks::new(
                    target.dedicated(&name),
                    holders.clone(),
                    config.db_timeout + config.db_statement_timeout,
                ))
            }),
            DatabaseUrl::Sqlite(_) => None,
        };
        Self { holders, pg }
    }

    /// Keeps the lock connection (PostgreSQL only; resolves at once otherwise): connects,
    /// listens, serves the hand-over requests of other replicas and the releases of this
    /// one's leases, and when the connection is lost stops this process's PATCHes and
    /// connects again. Runs until dropped; dropping it closes the session, which frees every
    /// lock it held. Run it on one task.
    pub async fn keep_session(self) {
        if let Some(pg) = self.pg {
            pg.keep().await;
        }
    }

    /// Takes upload `id`'s lock, or answers `None` when another request holds it. With
    /// `hand_over`, a PATCH holding it is asked to stop first (one of this process at once;
    /// on PostgreSQL one of another replica too, through [`CHANNEL`]) and its lock waited for
    /// up to [`HANDOVER_WAIT`]. On PostgreSQL, 503 `database_unavailable` while the lock
    /// connection is down.
    pub async fn take(&self, id: UploadId, hand_over: bool) -> Result<Option<Lease>, AppError> {
        if hand_over {
            self.hand_over_here(id).await;
        }
        let Some(pg) = &self.pg else {
            return Ok(Some(Lease::local()));
        };
        let mut patience = Patience::new();
        let mut asked = false;
        loop {
            match pg.try_lock(id).await? {
                Try::Taken(lease) => return Ok(Some(lease)),
                Try::HeldHere => return Ok(None),
                Try::HeldElsewhere if !hand_over => return Ok(None),
                Try::HeldElsewhere => {
                    if !asked {
                        pg.ask(id).await?;
                        asked = true;
                    }
                    if !patience.pause().await {
                        return Ok(None);
                    }
                }
            }
        }
    }

    /// Registers the PATCH that has just locked upload `id` with `lease` as its holder;
    /// answers its hold and the signal it must watch. A lease whose session was lost
    /// meanwhile is told to stop at once.
    pub fn hold(&self, id: UploadId, lease: Lease) -> (Hold, Arc<Notify>) {
        let session = lease.0.as_ref().map(|leased| leased.session);
        let (hold, stop) = self.holders.hold(id, lease);
        // After registering: a loss from now on stops it through `Holders::stop_all`.
        if let (Some(pg), Some(session)) = (&self.pg, session) {
            if !pg.is_current(session) {
                stop.notify_one();
            }
        }
        (hold, stop)
    }

    /// Waits, up to `within`, until the lock connection is open (at once on SQLite); answers
    /// whether it is. Start-up waits for it, so that a replica serving takes PATCHes.
    pub async fn wait_connected(&self, within: Duration) -> bool {
        let Some(pg) = &self.pg else {
            return true;
        };
        let mut up = pg.up.subscribe();
        let opened = tokio::time::timeout(within, up.wait_for(|up| *up)).await;
        matches!(opened, Ok(Ok(_)))
    }

    /// Whether a PATCH holds upload `id` now: one of this process, or (PostgreSQL) of
    /// another replica. The common answer, no, costs one round trip on the lock connection
    /// (none on SQLite); a connection that is down answers no (a `HEAD` still reads the
    /// recorded offset).
    pub async fn is_held(&self, id: UploadId) -> bool {
        if self.holders.is_held(id) {
            return true;
        }
        match &self.pg {
            Some(pg) => pg.held_elsewhere(id).await.unwrap_or(false),
            None => false,
        }
    }

    /// Asks the PATCH holding upload `id` (of this process, or of another replica) to stop,
    /// and waits until it has recorded its offset and let go, up to [`HANDOVER_WAIT`]:
    /// what `HEAD` does before it reads the offset.
    pub async fn hand_over(&self, id: UploadId) {
        if self.hand_over_here(id).await {
            return;
        }
        let Some(pg) = &self.pg else {
            return;
        };
        if pg.ask(id).await.is_err() {
            return;
        }
        let mut patience = Patience::new();
        while matches!(pg.held_elsewhere(id).await, Ok(true)) && patience.pause().await {}
    }

    /// The in-process hand-over: asks this process's PATCH holding upload `id`, if one does,
    /// to stop, and waits for its release; answers whether there was one.
    async fn hand_over_here(&self, id: UploadId) -> bool {
        let Some(released) = self.holders.ask_release(id) else {
            return false;
        };
        let _ = tokio::time::timeout(HANDOVER_WAIT, released).await;
        true
    }
}

/// A wait of up to [`HANDOVER_WAIT`] for a lock another replica was asked to let go of,
/// in pauses that grow from [`FIRST_PAUSE`] to [`LONGEST_PAUSE`].
struct Patience {
    deadline: tokio::time::Instant,
    next: Duration,
}

impl Patience {
    fn new() -> Self {
        Self {
            deadline: tokio::time::Instant::now() + HANDOVER_WAIT,
            next: FIRST_PAUSE,
        }
    }

    /// Pauses before the next try; `false` (at once) when that would pass the deadline.
    async fn pause(&mut self) -> bool {
        if tokio::time::Instant::now() + self.next > self.deadline {
            return false;
        }
        tokio::time::sleep(self.next).await;
        self.next = (self.next * 2).min(LONGEST_PAUSE);
        true
    }
}

/// What a try at an advisory lock found.
enum Try {
    Taken(Lease),
    /// A request of this process holds it (or is taking it).
    HeldHere,
    /// Another session (another replica) holds it.
    HeldElsewhere,
}

/// The advisory locks of one process, on its one lock connection.
struct PgLocks {
    target: PgTarget,
    holders: Arc<Holders>,
    /// The longest a lock statement may take before the session is given up.
    timeout: Duration,
    state: Mutex<State>,
    /// Releases of leases, in the order they were dropped, for the session's task.
    releases: mpsc::UnboundedSender<Release>,
    releases_rx: Mutex<Option<mpsc::UnboundedReceiver<Release>>>,
    /// Whether the session is up, for whoever waits for it.
    up: watch::Sender<bool>,
}

impl std::fmt::Debug for PgLocks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgLocks").finish_non_exhaustive()
    }
}

#[derive(Default)]
struct State {
    /// The session now; `None` while the connection is down.
    session: Option<Arc<Session>>,
    /// Numbers the sessions, so that a lease of a lost one is told apart.
    sessions: u64,
    /// The uploads this process has a lease on (or is taking one), with its session.
    leased: HashMap<UploadId, u64>,
    /// Why the connection is down, for the 503's log.
    cause: String,
}

/// One lock session: its client and statements, prepared once.
struct Session {
    number: u64,
    client: tokio_postgres::Client,
    /// The server process of this session (its own notifications are ignored).
    pid: i32,
    lock: Statement,
    unlock: Statement,
    probe: Statement,
    notify: Statement,
    /// Told when a statement failed: the session's state is unknown, so it is ended.
    broken: Notify,
}

/// A lease dropped: its lock to release on the session it was taken on.
struct Release {
    key: i64,
    session: u64,
    /// The upload to forget once the lock is released (a try that was cancelled).
    forget: Option<UploadId>,
}

/// A try at a lock under way. Dropped unsettled (its request cancelled), it may have taken
/// the lock: the session's task releases it (a release of a lock not held does nothing),
/// and only then forgets the upload, so that no other try of this process stacks a lock
/// on it meanwhile.
struct Trying<'a> {
    locks: &'a PgLocks,
    id: UploadId,
    session: u64,
    settled: bool,
}

impl Drop for Trying<'_> {
    fn drop(&mut self) {
        if !self.settled {
            let _ = self.locks.releases.send(Release {
                key: key_of(self.id),
                session: self.session,
                forget: Some(self.id),
            });
        }
    }
}

impl PgLocks {
    fn new(target: PgTarget, holders: Arc<Holders>, timeout: Duration) -> Self {
        let (releases, releases_rx) = mpsc::unbounded_channel();
        Self {
            target,
            holders,
            timeout,
            state: Mutex::new(State {
                cause: "not connected yet".into(),
                ..State::default()
            }),
            releases,
            releases_rx: Mutex::new(Some(releases_rx)),
            up: watch::Sender::new(false),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every change under this lock is a single step: a panic leaves it consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn current(&self) -> Result<Arc<Session>, AppError> {
        let state = self.state();
        match &state.session {
            Some(session) => Ok(session.clone()),
            None => Err(AppError::database_unavailable(
                "the upload lock connection is down",
                &state.cause,
            )),
        }
    }

    fn is_current(&self, number: u64) -> bool {
        self.state()
            .session
            .as_ref()
            .is_some_and(|s| s.number == number)
    }

    /// Runs `statement` on `session` with `params` within the timeout; a failure breaks the
    /// session (whether a lock was taken is unknown, so the session must end to free it).
    async fn run(
        &self,
        session: &Session,
        statement: &Statement,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<bool, AppError> {
        let query = session.client.query_one(statement, params);
        let failed = match tokio::time::timeout(self.timeout, query).await {
            Ok(Ok(row)) => match row.try_get::<_, Option<bool>>(0) {
                Ok(answer) => return Ok(answer.unwrap_or(false)),
                Err(err) => error_chain(&err),
            },
            Ok(Err(err)) => error_chain(&err),
            Err(_) => format!("no answer within {} ms", self.timeout.as_millis()),
        };
        session.broken.notify_one();
        Err(AppError::database_unavailable(
            "a statement on the upload lock connection",
            failed,
        ))
    }

    async fn try_lock(self: &Arc<Self>, id: UploadId) -> Result<Try, AppError> {
        let session = self.current()?;
        {
            let mut state = self.state();
            if state.leased.contains_key(&id) {
                return Ok(Try::HeldHere);
            }
            state.leased.insert(id, session.number);
        }
        let mut trying = Trying {
            locks: self,
            id,
            session: session.number,
            settled: false,
        };
        let taken = self.run(&session, &session.lock, &[&key_of(id)]).await;
        trying.settled = true;
        if let Ok(true) = taken {
            return Ok(Try::Taken(Lease(Some(Leased {
                locks: self.clone(),
                id,
                session: session.number,
            }))));
        }
        self.forget(id, session.number);
        taken.map(|_| Try::HeldElsewhere)
    }

    /// Whether another session holds upload `id`'s lock: a try that lets go at once.
    async fn held_elsewhere(&self, id: UploadId) -> Result<bool, AppError> {
        let session = self.current()?;
        self.run(&session, &session.probe, &[&key_of(id)]).await
    }

    /// Asks every replica for upload `id` (the one holding it stops its PATCH).
    async fn ask(&self, id: UploadId) -> Result<(), AppError> {
        let session = self.current()?;
        let payload = id.to_string();
        self.run(&session, &session.notify, &[&CHANNEL, &payload])
            .await
            .map(drop)
    }

    /// Forgets the lease on upload `id` taken on session `number`, if it is still the one.
    fn forget(&self, id: UploadId, number: u64) {
        let mut state = self.state();
        if state.leased.get(&id) == Some(&number) {
            state.leased.remove(&id);
        }
    }

    /// A lease dropped: forgotten here, and its lock released by the session's task (the
    /// lock of a session already lost went with it).
    fn release(&self, id: UploadId, number: u64) {
        self.forget(id, number);
        let _ = self.releases.send(Release {
            key: key_of(id),
            session: number,
            forget: None,
        });
    }

    /// The session's task: see [`UploadLocks::keep_session`].
    async fn keep(self: Arc<Self>) {
        let taken = self
            .releases_rx
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let Some(mut releases) = taken else {
            return;
        };
        let mut pause = RECONNECT_FIRST;
        let mut outage_logged = false;
        loop {
            match self.serve(&mut releases).await {
                Ok(cause) => {
                    // It was up: a loss, logged, and a first try again at once.
                    self.lose(&cause);
                    pause = Duration::ZERO;
                    outage_logged = false;
                }
                Err(cause) => {
                    if !outage_logged {
                        log::warn!("upload locks: cannot open the lock connection: {cause}");
                        outage_logged = true;
                    }
                    self.state().cause = cause;
                }
            }
            // Releases queued meanwhile belong to a lost session: its locks went with it.
            while releases.try_recv().is_ok() {}
            tokio::time::sleep(pause).await;
            pause = (pause * 2).clamp(RECONNECT_FIRST, RECONNECT_LONGEST);
        }
    }

    /// One session, from its connect to its loss: `Err` when it never came up, else `Ok`
    /// with why it ended.
    async fn serve(
        &self,
        releases: &mut mpsc::UnboundedReceiver<Release>,
    ) -> Result<String, String> {
        let connect = tokio::time::timeout(self.timeout, self.target.connect());
        let (client, connection) = connect
            .await
            .map_err(|_| format!("no answer within {} ms", self.timeout.as_millis()))??;
        let (notes_tx, mut notes) = mpsc::unbounded_channel();
        // Its own task: the connection must be driven while this one awaits its statements.
        // Aborting it drops the connection, which ends the session.
        let mut driving = tokio::spawn(drive(connection, notes_tx));
        let number = {
            let mut state = self.state();
            state.sessions += 1;
            state.sessions
        };
        let setup = tokio::time::timeout(self.timeout, open_session(client, number));
        let session = match setup.await {
            Ok(Ok(session)) => Arc::new(session),
            Ok(Err(err)) => {
                driving.abort();
                return Err(error_chain(&err));
            }
            Err(_) => {
                driving.abort();
                return Err(format!("no answer within {} ms", self.timeout.as_millis()));
            }
        };
        self.state().session = Some(session.clone());
        self.up.send_replace(true);
        log::info!(
            "upload locks: lock connection open (server process {})",
            session.pid
        );
        let cause = loop {
            tokio::select! {
                ended = &mut driving => {
                    break ended.unwrap_or_else(|join| format!("its task ended: {join}"));
                }
                () = session.broken.notified() => {
                    driving.abort();
                    break "a lock statement failed".to_owned();
                }
                Some(note) = notes.recv() => self.asked(&note, session.pid),
                Some(release) = releases.recv() => {
                    if release.session == session.number {
                        // A failure breaks the session (`run`), ending this loop next.
                        let _ = self.run(&session, &session.unlock, &[&release.key]).await;
                    }
                    if let Some(id) = release.forget {
                        self.forget(id, release.session);
                    }
                }
            }
        };
        Ok(cause)
    }

    /// Another replica asked for an upload: this process's PATCH holding it, if any, stops
    /// (the asker waits for the lock itself).
    fn asked(&self, note: &Notification, own_pid: i32) {
        if note.process_id() == own_pid || note.channel() != CHANNEL {
            return;
        }
        if let Ok(id) = note.payload().parse::<UploadId>() {
            if self.holders.ask_release(id).is_some() {
                log::info!("upload {id}: another replica asked for it; its PATCH here stops");
            }
        }
    }

    /// The session was lost, and every lock with it: new PATCHes are refused until it is
    /// back, and those running are stopped (they keep their bytes and record the offset).
    fn lose(&self, cause: &str) {
        {
            let mut state = self.state();
            state.session = None;
            state.sessions += 1;
            state.leased.clear();
            state.cause = format!("the lock connection was lost: {cause}");
        }
        self.up.send_replace(false);
        let stopped = self.holders.stop_all();
        log::warn!(
            "upload locks: the lock connection was lost ({cause}); {stopped} PATCH(es) \
             stopped, their bytes kept; new PATCHes get 503 until it is back"
        );
    }
}

/// Opens session `number` on `client`: its settings, `LISTEN`, its statements.
async fn open_session(
    client: tokio_postgres::Client,
    number: u64,
) -> Result<Session, tokio_postgres::Error> {
    client.simple_query(SESSION_SETTINGS).await?;
    client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
    let pid: i32 = client
        .query_one("SELECT pg_backend_pid()", &[])
        .await?
        .try_get(0)?;
    let lock = client.prepare("SELECT pg_try_advisory_lock($1)").await?;
    let unlock = client.prepare("SELECT pg_advisory_unlock($1)").await?;
    // Held by another session when this one cannot take it; when it can, it lets go at
    // once (re-entrant: a lock this session holds stays held).
    let probe = client
        .prepare(
            "SELECT CASE WHEN pg_try_advisory_lock($1) THEN NOT pg_advisory_unlock($1) \
             ELSE true END",
        )
        .await?;
    let notify = client.prepare("SELECT true FROM pg_notify($1, $2)").await?;
    Ok(Session {
        number,
        client,
        pid,
        lock,
        unlock,
        probe,
        notify,
        broken: Notify::new(),
    })
}

/// Drives the lock connection, handing its notifications on; answers why it ended.
async fn drive<S, T>(
    mut connection: tokio_postgres::Connection<S, T>,
    notes: mpsc::UnboundedSender<Notification>,
) -> String
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        match poll_fn(|cx| connection.poll_message(cx)).await {
            Some(Ok(AsyncMessage::Notification(note))) => {
                let _ = notes.send(note);
            }
            // Notices (a release of a lock already gone warns): nothing to do.
            Some(Ok(_)) => {}
            Some(Err(err)) => return error_chain(&err),
            None => return "the server closed it".to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_covers_the_whole_id() {
        // Two v7 ids of the same millisecond share their first 6 bytes.
        let a: UploadId = "01938a2b-7c00-7000-8000-000000000001".parse().unwrap();
        let b: UploadId = "01938a2b-7c00-7000-8000-000000000002".parse().unwrap();
        assert_ne!(key_of(a), key_of(b));
        // Fixed, so every replica and version agrees: FNV-1a of the 16 bytes.
        assert_eq!(key_of(a), key_of(a));
        let zero: UploadId = "00000000-0000-0000-0000-000000000000".parse().unwrap();
        let mut expected: u64 = 0xcbf2_9ce4_8422_2325;
        for _ in 0..16 {
            expected = expected.wrapping_mul(0x100_0000_01b3);
        }
        assert_eq!(key_of(zero), expected as i64);
    }
}
