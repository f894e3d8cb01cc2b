//! Skipped cases said out loud. libtest captures what `print!`/`eprint!` write and shows it
//! only for a failing test, so a case that skips and returns would read as `ok` and its
//! reason would be lost. [`skip`] writes straight to the process's stderr (not through the
//! macros, so the capture does not take it), counts the case, and at exit one summary line
//! says how many were skipped and why.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::sync::{Mutex, Once};

/// Skipped cases by reason.
static SKIPPED: Mutex<BTreeMap<&'static str, usize>> = Mutex::new(BTreeMap::new());
static SUMMARY: Once = Once::new();

/// Records that the running test skips for `reason` (one short phrase, the same for every
/// case skipped for it: it groups the summary), with `detail` (what was looked for, and how
/// to have it) on its line. The caller then returns.
pub fn skip(reason: &'static str, detail: impl std::fmt::Display) {
    SUMMARY.call_once(|| {
        // SAFETY: registers a plain `extern "C" fn` with no arguments; atexit has no other
        // precondition. Its result is only whether the summary will print.
        unsafe {
            libc::atexit(print_summary);
        }
    });
    *SKIPPED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(reason)
        .or_default() += 1;
    let thread = std::thread::current();
    let test = thread.name().filter(|n| *n != "main").unwrap_or("a test");
    let line = format!("SKIPPED {test}: {reason} ({detail})\n");
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// Runs at exit, after libtest's own summary: the count of skipped cases and their reasons.
extern "C" fn print_summary() {
    let skipped = SKIPPED.lock().unwrap_or_else(|e| e.into_inner());
    let total: usize = skipped.values().sum();
    if total == 0 {
        return;
    }
    let reasons = skipped
        .iter()
        .map(|(reason, n)| format!("{n} × {reason}"))
        .collect::<Vec<_>>()
        .join("; ");
    let line = format!(
        "\nSKIPPED {total} test case(s), counted as passed above: {reasons}. \
         The README's \"Tests and CI\" says how to run them all.\n"
    );
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}
