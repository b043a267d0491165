//! Progress for long stages: a bar on a terminal, a few plain lines
//! (every tenth of the work) when stderr is a file or a pipe, nothing with
//! `--quiet`.

use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A progress reporter; cloning shares the count.
#[derive(Clone)]
pub struct Progress {
    sink: Sink,
}

#[derive(Clone)]
enum Sink {
    Quiet,
    Bar(ProgressBar),
    Lines(Arc<Lines>),
}

/// Plain-line reporting: the count and the next tenth to announce.
struct Lines {
    what: String,
    len: u64,
    done: AtomicU64,
    next_tenth: AtomicU64,
    start: Instant,
}

impl Progress {
    pub fn new(len: u64, what: &str, quiet: bool) -> Progress {
        let sink = if quiet {
            Sink::Quiet
        } else if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new(len);
            bar.set_style(
                ProgressStyle::with_template("{prefix:>10} [{bar:30}] {pos}/{len} {per_sec} eta {eta} {msg}")
                    .expect("valid template")
                    .progress_chars("=> "),
            );
            bar.set_prefix(what.to_string());
            bar.enable_steady_tick(Duration::from_millis(250));
            Sink::Bar(bar)
        } else {
            Sink::Lines(Arc::new(Lines {
                what: what.to_string(),
                len,
                done: AtomicU64::new(0),
                next_tenth: AtomicU64::new(1),
                start: Instant::now(),
            }))
        };
        Progress { sink }
    }

    pub fn inc(&self, n: u64) {
        match &self.sink {
            Sink::Quiet => {}
            Sink::Bar(b) => b.inc(n),
            Sink::Lines(l) => {
                let done = l.done.fetch_add(n, Ordering::Relaxed) + n;
                let tenth = (done * 10).checked_div(l.len).map_or(10, |t| t.min(10));
                let next = l.next_tenth.load(Ordering::Relaxed);
                if tenth >= next
                    && l.next_tenth.compare_exchange(next, tenth + 1, Ordering::Relaxed, Ordering::Relaxed).is_ok()
                {
                    eprintln!("{}: {done}/{} ({:.0} s)", l.what, l.len, l.start.elapsed().as_secs_f64());
                }
            }
        }
    }

    pub fn set_message(&self, msg: impl Into<String>) {
        if let Sink::Bar(b) = &self.sink {
            b.set_message(msg.into());
        }
    }

    pub fn finish(&self) {
        if let Sink::Bar(b) = &self.sink {
            b.finish_and_clear();
        }
    }
}
