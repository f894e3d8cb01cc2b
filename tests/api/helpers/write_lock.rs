//! A writer outside troupe that holds the database's write lock: PostgreSQL's `users` table
//! locked in an open transaction, or SQLite's file held by `BEGIN IMMEDIATE`. troupe's
//! writes wait on it until their statement timeout ends them.

use std::sync::mpsc;
use std::thread::JoinHandle;

use crate::helpers::TestDb;

/// The lock, held until [`WriteLock::release`].
pub enum WriteLock {
    Postgres(tokio_postgres::Client),
    Sqlite {
        release: mpsc::Sender<()>,
        holder: JoinHandle<()>,
    },
}

impl WriteLock {
    /// Takes the lock on `db` from a connection of the test's own.
    pub async fn hold(db: &TestDb) -> Self {
        match db {
            TestDb::Postgres(pg) => Self::Postgres(pg.lock_users().await),
            TestDb::Sqlite(path) => {
                let path = path.to_string_lossy().into_owned();
                let (locked_tx, locked_rx) = mpsc::channel();
                let (release, release_rx) = mpsc::channel::<()>();
                let holder = std::thread::spawn(move || {
                    use diesel::connection::SimpleConnection as _;
                    use diesel::Connection as _;
                    let mut conn = diesel::SqliteConnection::establish(&path).unwrap();
                    conn.batch_execute("BEGIN IMMEDIATE").unwrap();
                    locked_tx.send(()).unwrap();
                    let _ = release_rx.recv();
                    conn.batch_execute("ROLLBACK").unwrap();
                });
                locked_rx.recv().expect("the SQLite writer took its lock");
                Self::Sqlite { release, holder }
            }
        }
    }

    /// Rolls the outside transaction back: waiting writes go on.
    pub async fn release(self) {
        match self {
            Self::Postgres(client) => client.batch_execute("ROLLBACK").await.unwrap(),
            Self::Sqlite { release, holder } => {
                release.send(()).unwrap();
                holder.join().unwrap();
            }
        }
    }
}
