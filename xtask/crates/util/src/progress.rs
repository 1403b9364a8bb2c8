//! Progress reporting for long transfers: bars on a terminal (one per active
//! item plus a total), plain lines every few seconds when stderr is a log.
//! A rate is shown only once a second of data has come: earlier, one
//! buffer's worth over a few milliseconds reads as GiB/s.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::style::ProgressTracker;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

use crate::fmt::human_bytes;

const LINE_EVERY: Duration = Duration::from_secs(5);
/// Data needed before a rate is shown.
const RATE_AFTER: Duration = Duration::from_secs(1);
/// The rate is over the last this long.
const RATE_WINDOW: Duration = Duration::from_secs(5);
/// What the bar of bytes read back from the downloads counts: hashed
/// against the release's digests (and, for the disk, unpacked).
const CHECKED: &str = "verified";

/// The progress of one transfer of `total` bytes: bars on a terminal, else a plain line every few seconds.
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
    /// What was done before this run (a resumed download): not a rate.
    base: u64,
    checked: u64,
    last_line: Instant,
    /// When this run's first bytes came.
    first_data: Option<Instant>,
}

/// A bar's rate over the last [`RATE_WINDOW`], from its first movement (a
/// bar that starts part-way, resumed, does not count what was there), and
/// nothing before [`RATE_AFTER`] of data.
#[derive(Clone, Default)]
struct Rate {
    start: Option<u64>,
    samples: VecDeque<(Instant, u64)>,
}

impl ProgressTracker for Rate {
    fn clone_box(&self) -> Box<dyn ProgressTracker> {
        Box::new(self.clone())
    }

    fn tick(&mut self, state: &ProgressState, now: Instant) {
        let pos = state.pos();
        let start = *self.start.get_or_insert(pos);
        if pos == start && self.samples.is_empty() {
            return;
        }
        if self.samples.is_empty() {
            // Data began somewhere since the last tick: count from here.
            self.samples.push_back((now, pos));
            return;
        }
        self.samples.push_back((now, pos));
        while self.samples.len() > 2 && now - self.samples[1].0 >= RATE_WINDOW {
            self.samples.pop_front();
        }
    }

    fn reset(&mut self, _: &ProgressState, _: Instant) {
        *self = Rate::default();
    }

    fn write(&self, _: &ProgressState, w: &mut dyn std::fmt::Write) {
        if let Some(r) = rate(self.samples.front(), self.samples.back()) {
            let _ = write!(w, "{r}");
        }
    }
}

/// `N/s` between two samples at least [`RATE_AFTER`] apart.
fn rate(from: Option<&(Instant, u64)>, to: Option<&(Instant, u64)>) -> Option<String> {
    let (&(t0, p0), &(t1, p1)) = (from?, to?);
    let span = t1.checked_duration_since(t0)?;
    (span >= RATE_AFTER).then(|| {
        let per_sec = p1.saturating_sub(p0) as f64 / span.as_secs_f64();
        format!("{}/s", human_bytes(per_sec as u64))
    })
}

/// A bar style from `template`, with `{rate}` as [`Rate`] shows it.
fn bar_style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .expect("valid template")
        .with_key("rate", Rate::default())
        .progress_chars("=> ")
}

/// How progress is shown; read from the environment once, by `cli`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Style {
    /// Bars on a terminal; else a plain line every few seconds.
    pub bars: bool,
    /// Colours on the bars.
    pub colour: bool,
}

impl Style {
    /// Plain lines, no colour: for logs and tests.
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
                "{msg:>12.bold} [{bar:30.cyan/blue}] {bytes}/{total_bytes} {rate} ETA {eta}"
            } else {
                "{msg:>12} [{bar:30}] {bytes}/{total_bytes} {rate} ETA {eta}"
            };
            let total_bar = multi.add(ProgressBar::new(total).with_position(done));
            total_bar.set_style(bar_style(tmpl));
            total_bar.set_message(what.to_string());
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
                base: done,
                checked: 0,
                last_line: Instant::now(),
                first_data: None,
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
                bar.set_style(bar_style(
                    "{msg:>12} [{bar:30}] {bytes}/{total_bytes} {rate}",
                ));
                bar.set_message(CHECKED);
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
            self.item_bar(b, item, size, 0).inc(n);
            return;
        }
        self.plain_line(n);
    }

    /// `item` (of `size`) resumes with `done` bytes already there: its bar
    /// starts there.
    pub fn resume_item(&self, item: &str, size: u64, done: u64) {
        if let Some(b) = &self.bars {
            self.item_bar(b, item, size, done);
        }
    }

    /// The bar of `item`, made at `done` if it has none yet.
    fn item_bar(&self, b: &Bars, item: &str, size: u64, done: u64) -> ProgressBar {
        let mut items = b.items.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, bar)) = items.iter().find(|(name, _)| name == item) {
            return bar.clone();
        }
        let bar = b.multi.insert_before(
            &b.total,
            ProgressBar::new(size).with_position(done.min(size)),
        );
        bar.set_style(bar_style(
            "{msg:>40!} [{bar:30}] {bytes}/{total_bytes} {rate}",
        ));
        bar.set_message(item.to_string());
        items.push((item.to_string(), bar.clone()));
        bar
    }

    fn plain_line(&self, n: u64) {
        let mut p = self.plain.lock().unwrap_or_else(|e| e.into_inner());
        p.done += n;
        let now = Instant::now();
        let first = *p.first_data.get_or_insert(now);
        if p.last_line.elapsed() < LINE_EVERY {
            return;
        }
        p.last_line = now;
        let rate = rate(Some(&(first, p.base)), Some(&(now, p.done)))
            .map_or(String::new(), |r| format!(", {r}"));
        let checked = if p.checked > 0 {
            format!(", {} {CHECKED}", human_bytes(p.checked))
        } else {
            String::new()
        };
        say!(
            "  {} of {} ({:.0}%){rate}{checked}",
            human_bytes(p.done),
            human_bytes(self.total),
            100.0 * p.done as f64 / self.total.max(1) as f64,
        );
    }

    /// A line of its own, above the bars. Lines may quote a server, so
    /// control characters are escaped here.
    pub fn say(&self, line: &str) {
        let line = crate::text::clean_message(line);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_rate_before_a_second_of_data() {
        let t0 = Instant::now();
        let at = |ms: u64, bytes: u64| (t0 + Duration::from_millis(ms), bytes);
        // One 256 KiB buffer in 5 ms would read as 50 MiB/s.
        assert_eq!(rate(Some(&at(0, 0)), Some(&at(5, 256 << 10))), None);
        assert_eq!(rate(Some(&at(0, 0)), Some(&at(999, 1 << 30))), None);
        assert_eq!(
            rate(Some(&at(0, 1 << 20)), Some(&at(2000, 3 << 20))).as_deref(),
            Some("1.0 MiB/s")
        );
        assert_eq!(rate(None, Some(&at(2000, 1))), None);
    }
}
