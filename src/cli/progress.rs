//! The copy progress line on stderr (bytes done / total, rate), drawn only when stderr is
//! a terminal: the registry client tells it how copies go, from several threads.

use crate::ops::put_manifest::human_bytes;
use crate::registry::Progress;
use std::io::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

/// How often the line is drawn at most.
const EVERY: Duration = Duration::from_millis(200);

pub struct Line {
    planned: AtomicI64,
    copied: AtomicI64,
    start: Instant,
    /// When the line was last drawn; whether it was ever drawn.
    drawn: Mutex<(Instant, bool)>,
}

impl Line {
    pub fn new() -> Line {
        let now = Instant::now();
        Line {
            planned: AtomicI64::new(0),
            copied: AtomicI64::new(0),
            start: now,
            drawn: Mutex::new((now, false)),
        }
    }

    fn draw(&self, force: bool) {
        let mut drawn = self.drawn.lock().unwrap_or_else(|e| e.into_inner());
        if !force && drawn.0.elapsed() < EVERY {
            return;
        }
        let done = self.copied.load(Ordering::SeqCst).max(0) as u64;
        let total = self.planned.load(Ordering::SeqCst).max(0) as u64;
        let rate = done as f64 / self.start.elapsed().as_secs_f64().max(1e-3);
        let _ = write!(
            std::io::stderr(),
            "\r\x1b[Kcopying layers: {} / {}, {}/s",
            human_bytes(done),
            human_bytes(total),
            human_bytes(rate as u64)
        );
        *drawn = (Instant::now(), true);
    }

    /// Ends the line, if it was drawn, with its last figures.
    pub fn finish(&self) {
        if self.drawn.lock().unwrap_or_else(|e| e.into_inner()).1 {
            self.draw(true);
            let _ = writeln!(std::io::stderr());
        }
    }
}

impl Progress for Line {
    fn planned(&self, bytes: i64) {
        self.planned.fetch_add(bytes, Ordering::SeqCst);
        self.draw(false);
    }

    fn copied(&self, bytes: i64) {
        self.copied.fetch_add(bytes, Ordering::SeqCst);
        self.draw(false);
    }
}
