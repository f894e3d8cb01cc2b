//! The process's log: `RUST_LOG` filtering (default `info`), one line per record, and every
//! line written while a request is served ends with `request_id=…`, wherever it was written
//! (a handler, or an actor serving a message that carries the id).

use std::io::Write as _;

use crate::http::request_id::{current, id_str};

/// Installs the logger. Call once, first thing in `main`.
pub fn init() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format(|buf, record| {
            let style = buf.default_level_style(record.level());
            write!(
                buf,
                "[{} {style}{:<5}{style:#} {}] {}",
                buf.timestamp(),
                record.level(),
                record.target(),
                record.args()
            )?;
            match current() {
                // Lines that name the id themselves (the access log) are left as they are.
                Some(id) if !record.args().to_string().contains("request_id=") => {
                    writeln!(buf, " request_id={}", id_str(&id))
                }
                _ => writeln!(buf),
            }
        })
        .init();
}
