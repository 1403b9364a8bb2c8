//! Progress reporting for long transfers: bars on a terminal (one per active
//! item plus a total), plain lines every few seconds when stderr is a log.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::util::fmt::human_bytes;

const LINE_EVERY: Duration = Duration::from_secs(5);

pub struct Progress {
    bars: Option<Bars>,
    plain: Mutex<Plain>,
    total: u64,
}

struct Bars {
    multi: MultiProgress,
    total: ProgressBar,
    items: Mutex<Vec<(String, ProgressBar)>>,
    /// Bytes read back, hashed and (for the disk) unpacked: it trails the
    /// download when unpacking is the slower side.
    checked: Mutex<Option<ProgressBar>>,
}

struct Plain {
    done: u64,
    checked: u64,
    last_line: Instant,
    started: Instant,
}

/// How progress is shown; read from the environment once, by `cli`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Style {
    /// Bars on a terminal; else a plain line every few seconds.
    pub bars: bool,
    pub colour: bool,
}

impl Style {
    pub const PLAIN: Style = Style {
        bars: false,
        colour: false,
    };
}

impl Progress {
    /// `total` bytes are expected, `done` of them are already there.
    pub fn new(what: &str, total: u64, done: u64, style: Style) -> Progress {
        let bars = style.bars.then(|| {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
            let colour = style.colour;
            let tmpl = if colour {
                "{msg:>12.bold} [{bar:30.cyan/blue}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}"
            } else {
                "{msg:>12} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}"
            };
            let total_bar = multi.add(ProgressBar::new(total));
            total_bar.set_style(
                ProgressStyle::with_template(tmpl)
                    .expect("valid template")
                    .progress_chars("=> "),
            );
            total_bar.set_message(what.to_string());
            total_bar.set_position(done);
            Bars {
                multi,
                total: total_bar,
                items: Mutex::new(Vec::new()),
                checked: Mutex::new(None),
            }
        });
        Progress {
            bars,
            plain: Mutex::new(Plain {
                done,
                checked: 0,
                last_line: Instant::now(),
                started: Instant::now(),
            }),
            total,
        }
    }

    /// `n` more bytes were read back and checked by their consumer.
    pub fn checked(&self, n: u64) {
        if let Some(b) = &self.bars {
            let mut c = b.checked.lock().unwrap_or_else(|e| e.into_inner());
            let bar = c.get_or_insert_with(|| {
                let bar = b.multi.add(ProgressBar::new(self.total));
                bar.set_style(
                    ProgressStyle::with_template(
                        "{msg:>12} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
                    )
                    .expect("valid template")
                    .progress_chars("=> "),
                );
                bar.set_message("checked");
                bar
            });
            bar.inc(n);
            return;
        }
        let mut p = self.plain.lock().unwrap_or_else(|e| e.into_inner());
        p.checked += n;
    }

    /// `n` more bytes are done, counted on the total alone (one-item work).
    pub fn add(&self, n: u64) {
        if let Some(b) = &self.bars {
            b.total.inc(n);
        } else {
            self.plain_line(n);
        }
    }

    /// `n` more bytes of `item` (of `size`) are done.
    pub fn advance(&self, item: &str, size: u64, n: u64) {
        if let Some(b) = &self.bars {
            b.total.inc(n);
            let mut items = b.items.lock().unwrap_or_else(|e| e.into_inner());
            match items.iter().find(|(name, _)| name == item) {
                Some((_, bar)) => bar.inc(n),
                None => {
                    let bar = b.multi.insert_before(&b.total, ProgressBar::new(size));
                    bar.set_style(
                        ProgressStyle::with_template(
                            "{msg:>40!} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
                        )
                        .expect("valid template")
                        .progress_chars("=> "),
                    );
                    bar.set_message(item.to_string());
                    bar.inc(n);
                    items.push((item.to_string(), bar));
                }
            }
            return;
        }
        self.plain_line(n);
    }

    fn plain_line(&self, n: u64) {
        let mut p = self.plain.lock().unwrap_or_else(|e| e.into_inner());
        p.done += n;
        if p.last_line.elapsed() >= LINE_EVERY {
            p.last_line = Instant::now();
            let secs = p.started.elapsed().as_secs_f64().max(0.001);
            let checked = if p.checked > 0 {
                format!(", {} checked", human_bytes(p.checked))
            } else {
                String::new()
            };
            say!(
                "  {} of {} ({:.0}%), {}/s{checked}",
                human_bytes(p.done),
                human_bytes(self.total),
                100.0 * p.done as f64 / self.total.max(1) as f64,
                human_bytes((p.done as f64 / secs) as u64)
            );
        }
    }

    /// A line of its own, above the bars. Lines may quote a server, so
    /// control characters are escaped here.
    pub fn say(&self, line: &str) {
        let line = crate::util::text::clean_message(line);
        match &self.bars {
            Some(b) => b.multi.suspend(|| say!("{line}")),
            None => say!("{line}"),
        }
    }

    /// `item` is complete (and checked).
    pub fn item_done(&self, item: &str, note: &str) {
        if let Some(b) = &self.bars {
            let mut items = b.items.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(i) = items.iter().position(|(name, _)| name == item) {
                let (_, bar) = items.remove(i);
                bar.finish_and_clear();
            }
        }
        self.say(&format!("  {item}: {note}"));
    }

    /// Clears the bars; other output may follow without garbling them.
    pub fn finish(&self) {
        if let Some(b) = &self.bars {
            for (_, bar) in b.items.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
                bar.finish_and_clear();
            }
            if let Some(c) = b.checked.lock().unwrap_or_else(|e| e.into_inner()).take() {
                c.finish_and_clear();
            }
            b.total.finish_and_clear();
        }
    }
}
